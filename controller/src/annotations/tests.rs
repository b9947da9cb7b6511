//! `parse` on annotation sets drawn from ingress-nginx's documentation and end-to-end tests
//! (`test/e2e/annotations/*.go`): valid, invalid and conflicting values.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use gantry_proxy::policy::{Affinity, AffinityMode, Cors, CorsOrigin, HashBy, Policies, SameSite};
use http::StatusCode;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ByteString,
};

use super::*;
use crate::store::{Object, ObjectStore};

/// Annotations as `(name, value)` pairs.
type Anns<'a> = &'a [(&'a str, &'a str)];

/// `user foo`, password `bar` ({SHA}).
pub(crate) const HTPASSWD_FOO_BAR: &str = "foo:{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=\n";

fn key() -> ObjectKey {
    ObjectKey::new("default", "web")
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| {
            let key = if k.contains('/') {
                k.to_string()
            } else {
                format!("{PREFIX}{k}")
            };
            (key, v.to_string())
        })
        .collect()
}

fn parse_in(store: &ObjectStore, pairs: &[(&str, &str)]) -> IngressAnnotations {
    parse(&key(), Some(&annotations(pairs)), store)
}

fn parse_only(pairs: &[(&str, &str)]) -> IngressAnnotations {
    parse_in(&ObjectStore::new(), pairs)
}

fn outcome<'a>(a: &'a IngressAnnotations, name: &str) -> &'a Outcome {
    &a.report(name)
        .unwrap_or_else(|| panic!("no report for {name}: {:#?}", a.reports))
        .outcome
}

fn label(a: &IngressAnnotations, name: &str) -> &'static str {
    outcome(a, name).label()
}

pub(crate) fn opaque_secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Object {
    Object::Secret(Secret {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    })
}

pub(crate) fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> Object {
    Object::ConfigMap(ConfigMap {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    })
}

fn store(objects: Vec<Object>) -> ObjectStore {
    let mut s = ObjectStore::new();
    for o in objects {
        s.apply(o);
    }
    s
}

#[test]
fn no_annotations_is_no_policy_and_no_report() {
    let a = parse(&key(), None, &ObjectStore::new());
    assert_eq!(a, IngressAnnotations::default());
    assert!(a.ssl_redirect);
    let other = parse_only(&[
        ("kubernetes.io/ingress.class", "nginx"),
        ("gantry.dev/backend-mode", "node-port"),
    ]);
    assert!(
        other.reports.is_empty(),
        "only nginx.ingress.kubernetes.io/* keys are reported"
    );
}

#[test]
fn ingresses_whose_annotations_ask_for_nothing_share_one_reading() {
    let none = shared(parse(&key(), None, &ObjectStore::new()));
    let foreign = shared(parse_only(&[("kubernetes.io/ingress.class", "nginx")]));
    assert!(std::sync::Arc::ptr_eq(&none, &foreign));
    // Anything asked for is its own: an ssl-redirect turned off, even with nothing else.
    let off = shared(parse_only(&[(
        "nginx.ingress.kubernetes.io/ssl-redirect",
        "false",
    )]));
    assert!(!off.ssl_redirect && none.ssl_redirect);
    assert!(!std::sync::Arc::ptr_eq(&none, &off));
}

#[test]
fn ssl_redirects_follow_go_booleans_and_force_wins() {
    let cases: &[(Anns<'_>, bool, bool, Anns<'_>)] = &[
        (
            &[("ssl-redirect", "false")],
            false,
            false,
            &[("ssl-redirect", "honoured")],
        ),
        (
            &[("ssl-redirect", "False")],
            false,
            false,
            &[("ssl-redirect", "honoured")],
        ),
        (
            &[("ssl-redirect", "true")],
            true,
            false,
            &[("ssl-redirect", "difference")],
        ),
        (
            &[("ssl-redirect", "no")],
            true,
            false,
            &[("ssl-redirect", "invalid")],
        ),
        (
            &[("force-ssl-redirect", "true")],
            true,
            true,
            &[("force-ssl-redirect", "difference")],
        ),
        (
            &[("force-ssl-redirect", "1")],
            true,
            true,
            &[("force-ssl-redirect", "difference")],
        ),
        (
            &[("force-ssl-redirect", "yes")],
            true,
            false,
            &[("force-ssl-redirect", "invalid")],
        ),
        (
            &[("ssl-redirect", "false"), ("force-ssl-redirect", "true")],
            false,
            true,
            &[("ssl-redirect", "honoured"), ("force-ssl-redirect", "difference")],
        ),
        (
            &[("preserve-trailing-slash", "true")],
            true,
            false,
            &[("preserve-trailing-slash", "honoured")],
        ),
        (
            &[("preserve-trailing-slash", "false")],
            true,
            false,
            &[("preserve-trailing-slash", "difference")],
        ),
        (
            &[("ssl-redirect", "")],
            true,
            false,
            &[("ssl-redirect", "ignored")],
        ),
    ];
    for (pairs, ssl, force, outcomes) in cases {
        let a = parse_only(pairs);
        assert_eq!(
            (a.ssl_redirect, a.force_ssl_redirect),
            (*ssl, *force),
            "{pairs:?}"
        );
        for (name, want) in *outcomes {
            assert_eq!(label(&a, name), *want, "{pairs:?} {name}");
        }
        assert!(a.fails_closed().is_none());
    }
}

#[test]
fn from_to_www_redirect_takes_go_booleans() {
    let cases: &[(&str, bool, &str)] = &[
        ("true", true, "difference"),
        ("1", true, "difference"),
        ("false", false, "honoured"),
        ("yes", false, "invalid"),
        ("", false, "ignored"),
    ];
    for (value, on, outcome) in cases {
        let a = parse_only(&[("from-to-www-redirect", value)]);
        assert_eq!(a.from_to_www_redirect, *on, "{value:?}");
        assert_eq!(label(&a, "from-to-www-redirect"), *outcome, "{value:?}");
        assert!(a.fails_closed().is_none());
    }
}

#[test]
fn fixed_redirects_take_codes_in_range_and_temporal_wins() {
    let redirect = |pairs: &[(&str, &str)]| {
        let a = parse_only(pairs);
        let r = a
            .policies
            .redirect
            .clone()
            .map(|r| (r.status.as_u16(), r.location.to_str().unwrap().to_string()));
        (a, r)
    };
    // redirect.go: "should respond with a standard redirect code".
    let (a, r) = redirect(&[("permanent-redirect", "http://redirect.example.com")]);
    assert_eq!(r, Some((301, "http://redirect.example.com".into())));
    assert_eq!(label(&a, "permanent-redirect"), "honoured");
    // "should respond with a custom redirect code" (302 on a permanent redirect is accepted).
    let (_, r) = redirect(&[
        ("permanent-redirect", "http://redirect.example.com"),
        ("permanent-redirect-code", "302"),
    ]);
    assert_eq!(r, Some((302, "http://redirect.example.com".into())));
    let (_, r) = redirect(&[
        ("permanent-redirect", "https://www.google.com"),
        ("permanent-redirect-code", "308"),
    ]);
    assert_eq!(r.unwrap().0, 308);
    // Out of range or not a number: the default, reported.
    for code in ["309", "200", "abc", "-301"] {
        let (a, r) = redirect(&[
            ("permanent-redirect", "https://a.example"),
            ("permanent-redirect-code", code),
        ]);
        assert_eq!(r.unwrap().0, 301, "{code}");
        assert_eq!(label(&a, "permanent-redirect-code"), "invalid", "{code}");
    }
    let (_, r) = redirect(&[("temporal-redirect", "https://www.google.com")]);
    assert_eq!(r.unwrap().0, 302);
    let (_, r) = redirect(&[
        ("temporal-redirect", "https://www.google.com"),
        ("temporal-redirect-code", "307"),
    ]);
    assert_eq!(r.unwrap().0, 307);
    let (a, r) = redirect(&[
        ("temporal-redirect", "https://www.google.com"),
        ("temporal-redirect-code", "308"),
    ]);
    assert_eq!(r.unwrap().0, 302, "308 is not a temporal code");
    assert_eq!(label(&a, "temporal-redirect-code"), "invalid");
    // Both: temporal wins, as ingress-nginx's parser returns on the first.
    let (a, r) = redirect(&[
        ("temporal-redirect", "https://t.example"),
        ("permanent-redirect", "https://p.example"),
        ("permanent-redirect-code", "308"),
    ]);
    assert_eq!(r, Some((302, "https://t.example".into())));
    assert_eq!(label(&a, "permanent-redirect"), "ignored");
    assert_eq!(label(&a, "permanent-redirect-code"), "ignored");
    // Locations ingress-nginx refuses: relative, other schemes, odd characters.
    for bad in [
        "/relative",
        "ftp://x.example",
        "https://a.example/<script>",
        "http://",
        "https://a b",
    ] {
        let (a, r) = redirect(&[("permanent-redirect", bad)]);
        assert_eq!(r, None, "{bad}");
        assert_eq!(label(&a, "permanent-redirect"), "invalid", "{bad}");
        assert!(a.fails_closed().is_none(), "a redirect is no protection");
    }
    // nginx variables are not expanded: sent as written, reported as a difference.
    let (a, r) = redirect(&[("permanent-redirect", "https://example.com$request_uri")]);
    assert_eq!(r.unwrap().1, "https://example.com$request_uri");
    assert_eq!(label(&a, "permanent-redirect"), "difference");
    // A code without its redirect does nothing.
    let (a, r) = redirect(&[("permanent-redirect-code", "308")]);
    assert_eq!(r, None);
    assert_eq!(label(&a, "permanent-redirect-code"), "ignored");
}

#[test]
fn app_root_is_an_absolute_path() {
    let a = parse_only(&[("app-root", "/foo")]);
    assert_eq!(a.policies.app_root.as_ref().unwrap().path, "/foo");
    assert_eq!(label(&a, "app-root"), "honoured");
    for bad in ["foo", "http://other.example/x", "//evil.example", "/a b", "/a\"b"] {
        let a = parse_only(&[("app-root", bad)]);
        assert!(a.policies.app_root.is_none(), "{bad}");
        assert_eq!(label(&a, "app-root"), "invalid", "{bad}");
    }
}

#[test]
fn rewrite_target_use_regex_and_their_validation() {
    let a = parse_only(&[("rewrite-target", "/$2"), ("use-regex", "true")]);
    assert_eq!(a.rewrite_target.as_deref(), Some("/$2"));
    assert!(a.use_regex);
    assert!(a.regex_mode_for("/something(/|$)(.*)"));
    assert_eq!(label(&a, "rewrite-target"), "honoured");
    assert_eq!(label(&a, "use-regex"), "difference");

    // A target equal to the path is no rewrite (ingress-nginx's needsRewrite).
    let a = parse_only(&[("rewrite-target", "/foo")]);
    assert!(!a.regex_mode_for("/foo") && a.regex_mode_for("/bar"));

    // Characters outside ingress-nginx's set: the Ingress's paths answer 503.
    let a = parse_only(&[("rewrite-target", "/new?x=1")]);
    assert_eq!(a.rewrite_target, None);
    assert_eq!(label(&a, "rewrite-target"), "invalid");
    assert!(a.fails_closed().unwrap().contains("rewrite-target"));

    let a = parse_only(&[("use-regex", "sure")]);
    assert!(!a.use_regex);
    assert_eq!(label(&a, "use-regex"), "invalid");
    assert!(a.fails_closed().is_none());
}

#[test]
fn upstream_host_and_prefix() {
    let a = parse_only(&[
        ("upstream-vhost", "internal.example:8080"),
        ("x-forwarded-prefix", "/path"),
    ]);
    assert_eq!(
        a.policies.upstream.host.as_ref().unwrap(),
        "internal.example:8080"
    );
    assert_eq!(a.policies.upstream.forwarded_prefix.as_ref().unwrap(), "/path");
    let a = parse_only(&[
        ("upstream-vhost", "$host.internal"),
        ("x-forwarded-prefix", "/$1"),
    ]);
    assert!(a.policies.upstream.host.is_none() && a.policies.upstream.forwarded_prefix.is_none());
    assert_eq!(label(&a, "upstream-vhost"), "refused");
    assert_eq!(label(&a, "x-forwarded-prefix"), "refused");
    assert!(a.fails_closed().is_none());
    let a = parse_only(&[("upstream-vhost", "a b"), ("x-forwarded-prefix", "/a\"b")]);
    assert_eq!(label(&a, "upstream-vhost"), "invalid");
    assert_eq!(label(&a, "x-forwarded-prefix"), "invalid");
}

#[test]
fn server_aliases_are_host_names() {
    let a = parse_only(&[("server-alias", "bar, Foo.Example.com,,*.apps.example,bar")]);
    assert_eq!(a.server_alias, ["*.apps.example", "bar", "foo.example.com"]);
    assert_eq!(label(&a, "server-alias"), "honoured");
    let a = parse_only(&[("server-alias", "ok.example, ~^www\\d+\\.example\\.com$, a..b")]);
    assert_eq!(a.server_alias, ["ok.example"]);
    assert_eq!(label(&a, "server-alias"), "invalid");
}

#[test]
fn body_size_and_timeouts_use_nginx_units() {
    let a = parse_only(&[
        ("proxy-body-size", "8m"),
        ("proxy-connect-timeout", "50"),
        ("proxy-send-timeout", "20"),
        ("proxy-read-timeout", "20"),
    ]);
    assert_eq!(a.policies.max_body_bytes, Some(8 << 20));
    assert_eq!(a.policies.timeouts.connect, Some(Duration::from_secs(50)));
    assert_eq!(a.policies.timeouts.send, Some(Duration::from_secs(20)));
    assert_eq!(a.policies.timeouts.read, Some(Duration::from_secs(20)));
    // proxy.go: "should not set proxy client-max-body-size to incorrect value" (15r) and "should
    // not set invalid proxy timeouts" (50k); ingress-nginx takes no unit on timeouts.
    let a = parse_only(&[
        ("proxy-body-size", "15r"),
        ("proxy-connect-timeout", "50k"),
        ("proxy-send-timeout", "30s"),
        ("proxy-read-timeout", "0"),
    ]);
    assert_eq!(a.policies.max_body_bytes, None);
    assert_eq!(a.policies.timeouts, Default::default());
    for name in [
        "proxy-body-size",
        "proxy-connect-timeout",
        "proxy-send-timeout",
        "proxy-read-timeout",
    ] {
        assert_eq!(label(&a, name), "invalid", "{name}");
    }
    assert!(a.fails_closed().is_none());
    // 0 is no limit, which overrides any class-wide one.
    assert_eq!(
        parse_only(&[("proxy-body-size", "0")]).policies.max_body_bytes,
        Some(u64::MAX)
    );
}

#[test]
fn source_ranges_take_both_families_and_the_allowlist_name_wins() {
    let ranges = |a: &IngressAnnotations| {
        let r = a.policies.source_ranges.as_ref().unwrap();
        (
            r.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            r.deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
    };
    // ipallowlist.go: "18.0.0.0/8, 56.0.0.0/8".
    let a = parse_only(&[("allowlist-source-range", "18.0.0.0/8, 56.0.0.0/8")]);
    assert_eq!(ranges(&a).0, ["18.0.0.0/8", "56.0.0.0/8"]);
    assert!(a
        .policies
        .source_ranges
        .as_ref()
        .unwrap()
        .allows("18.1.2.3".parse::<IpAddr>().unwrap()));
    let a = parse_only(&[
        ("whitelist-source-range", "10.0.0.0/24,172.10.0.1"),
        ("denylist-source-range", "2001:db8::/32, 10.0.0.7"),
    ]);
    assert_eq!(
        ranges(&a),
        (
            vec!["10.0.0.0/24".into(), "172.10.0.1/32".into()],
            vec!["10.0.0.7/32".into(), "2001:db8::/32".into()]
        )
    );
    assert_eq!(label(&a, "whitelist-source-range"), "honoured");
    let a = parse_only(&[
        ("allowlist-source-range", "10.0.0.0/8"),
        ("whitelist-source-range", "192.168.0.0/16"),
    ]);
    assert_eq!(ranges(&a).0, ["10.0.0.0/8"]);
    assert_eq!(label(&a, "whitelist-source-range"), "ignored");
    let a = parse_only(&[
        ("allowlist-source-range", ""),
        ("whitelist-source-range", "192.168.0.0/16"),
    ]);
    assert_eq!(ranges(&a).0, ["192.168.0.0/16"]);
    assert!(a.fails_closed().is_none());
}

#[test]
fn invalid_source_ranges_fail_closed() {
    for (name, value) in [
        ("whitelist-source-range", "10.0.0.0/33"),
        ("allowlist-source-range", "10.0.0.0/8,"),
        ("denylist-source-range", "not-an-ip"),
        ("whitelist-source-range", ""),
        ("denylist-source-range", "  "),
    ] {
        let a = parse_only(&[(name, value)]);
        assert_eq!(label(&a, name), "invalid", "{name}: {value:?}");
        assert!(a.report(name).unwrap().fails_closed);
        let why = a
            .fails_closed()
            .unwrap_or_else(|| panic!("{name}: {value:?} must fail closed"));
        assert!(why.contains(name), "{why}");
        assert!(a.policies.source_ranges.is_none());
    }
}

#[test]
fn basic_auth_from_an_auth_file_or_an_auth_map() {
    let s = store(vec![
        opaque_secret("default", "basic-auth", &[("auth", HTPASSWD_FOO_BAR)]),
        opaque_secret("default", "map", &[("foo", "{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=")]),
    ]);
    let a = parse_in(
        &s,
        &[
            ("auth-type", "basic"),
            ("auth-secret", "basic-auth"),
            ("auth-realm", "Authentication Required - foo"),
        ],
    );
    assert!(a.fails_closed().is_none(), "{:?}", a.fails_closed());
    let auth = a.policies.basic_auth.as_ref().unwrap();
    assert!(auth.users.verify("foo", b"bar"));
    assert!(!auth.users.verify("foo", b"baz"));
    for name in ["auth-type", "auth-secret", "auth-realm"] {
        assert_eq!(label(&a, name), "honoured", "{name}");
    }
    // namespace/name in the Ingress's own namespace, and an auth-map.
    let a = parse_in(
        &s,
        &[
            ("auth-type", "basic"),
            ("auth-secret", "default/map"),
            ("auth-secret-type", "auth-map"),
        ],
    );
    assert!(a
        .policies
        .basic_auth
        .as_ref()
        .unwrap()
        .users
        .verify("foo", b"bar"));
}

#[test]
fn basic_auth_problems_fail_closed() {
    let s = store(vec![
        opaque_secret("default", "empty", &[("auth", "foo:")]),
        opaque_secret("default", "no-auth-key", &[("users", HTPASSWD_FOO_BAR)]),
        opaque_secret("other", "elsewhere", &[("auth", HTPASSWD_FOO_BAR)]),
        opaque_secret("default", "good", &[("auth", HTPASSWD_FOO_BAR)]),
    ]);
    let cases: &[(Anns<'_>, &str, &str)] = &[
        // auth.go: "should return status code 503 when authentication is configured with an invalid secret".
        (
            &[
                ("auth-type", "basic"),
                ("auth-secret", "something"),
                ("auth-realm", "test auth"),
            ],
            "auth-secret",
            "not found",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "empty")],
            "auth-secret",
            "line 1",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "no-auth-key")],
            "auth-secret",
            "no key \"auth\"",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "other/elsewhere")],
            "auth-secret",
            "cross-namespace",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "a/b/c")],
            "auth-secret",
            "namespace/name",
        ),
        (&[("auth-type", "basic")], "auth-type", "without auth-secret"),
        (
            &[("auth-type", "basic"), ("auth-secret", "")],
            "auth-secret",
            "empty",
        ),
        (
            &[("auth-type", "digest"), ("auth-secret", "good")],
            "auth-type",
            "digest",
        ),
        (
            &[("auth-type", "Basic"), ("auth-secret", "good")],
            "auth-type",
            "basic or digest",
        ),
        (
            &[
                ("auth-type", "basic"),
                ("auth-secret", "good"),
                ("auth-secret-type", "auth-list"),
            ],
            "auth-secret-type",
            "auth-file or auth-map",
        ),
        (
            &[
                ("auth-type", "basic"),
                ("auth-secret", "good"),
                ("auth-realm", "say \"hi\""),
            ],
            "auth-realm",
            "letters",
        ),
        (&[("auth-secret", "good")], "auth-secret", "without auth-type"),
    ];
    for (pairs, name, why) in cases {
        let a = parse_in(&s, pairs);
        let r = a.report(name).unwrap_or_else(|| panic!("{pairs:?}: no {name}"));
        assert!(
            matches!(r.outcome, Outcome::Invalid(_) | Outcome::Refused(_)),
            "{pairs:?}: {r:?}"
        );
        assert!(r.outcome.detail().unwrap().contains(why), "{pairs:?}: {r:?}");
        assert!(r.fails_closed, "{pairs:?}");
        assert!(a.fails_closed().is_some(), "{pairs:?} must fail closed");
        assert!(a.policies.basic_auth.is_none(), "{pairs:?}");
    }
    let missing = parse_in(&s, &[("auth-type", "basic"), ("auth-secret", "something")]);
    let r = missing.report("auth-secret").unwrap();
    assert_eq!(
        r.reference,
        Some(ReferenceProblem {
            kind: ReferenceKind::Secret,
            object: "default/something".into(),
            missing: true
        })
    );
    // The realm and type alone do nothing, as in ingress-nginx.
    let a = parse_in(&s, &[("auth-realm", "x"), ("auth-secret-type", "auth-map")]);
    assert!(a.fails_closed().is_none());
    assert_eq!(label(&a, "auth-realm"), "ignored");
}

#[test]
fn satisfy_any_is_stricter_when_there_is_a_choice() {
    let s = store(vec![opaque_secret(
        "default",
        "good",
        &[("auth", HTPASSWD_FOO_BAR)],
    )]);
    let a = parse_in(&s, &[("satisfy", "all")]);
    assert_eq!(label(&a, "satisfy"), "honoured");
    let a = parse_in(
        &s,
        &[
            ("satisfy", "any"),
            ("auth-type", "basic"),
            ("auth-secret", "good"),
            ("whitelist-source-range", "10.0.0.0/8"),
        ],
    );
    assert_eq!(label(&a, "satisfy"), "difference");
    assert!(a.fails_closed().is_none());
    let a = parse_in(&s, &[("satisfy", "either")]);
    assert_eq!(label(&a, "satisfy"), "invalid");
    assert!(a.fails_closed().is_some());
}

#[test]
fn cors_defaults_and_fields() {
    let a = parse_only(&[("enable-cors", "true")]);
    assert_eq!(*a.policies.cors.as_deref().unwrap(), Cors::default());
    // cors.go: methods, max-age, credentials, headers, expose headers.
    let a = parse_only(&[
        ("enable-cors", "true"),
        ("cors-allow-methods", "POST, GET"),
        ("cors-max-age", "200"),
        ("cors-allow-credentials", "false"),
        ("cors-allow-headers", "DNT, User-Agent"),
        (
            "cors-expose-headers",
            "X-CustomResponseHeader, X-CustomSecondHeader",
        ),
        ("cors-allow-origin", "https://origin.cors.com:8080"),
    ]);
    let c = a.policies.cors.as_deref().unwrap();
    assert_eq!(c.allow_methods, "POST, GET");
    assert_eq!(c.max_age, 200);
    assert!(!c.allow_credentials);
    assert_eq!(c.allow_headers, "DNT, User-Agent");
    assert_eq!(
        c.expose_headers.as_ref().unwrap(),
        "X-CustomResponseHeader, X-CustomSecondHeader"
    );
    assert_eq!(
        c.origins,
        [CorsOrigin::Exact("https://origin.cors.com:8080".into())]
    );
    assert!(
        a.reports.iter().all(|r| r.outcome == Outcome::Honoured),
        "{:#?}",
        a.reports
    );

    // Invalid fields: their default, reported.
    let a = parse_only(&[
        ("enable-cors", "true"),
        ("cors-allow-methods", "GET;DELETE"),
        ("cors-max-age", "-1"),
        ("cors-allow-credentials", "maybe"),
        ("cors-allow-headers", "X-$var"),
        ("cors-expose-headers", "X-A;X-B"),
        ("cors-allow-origin", "https://ok.example, https://a.example/path"),
    ]);
    assert_eq!(
        *a.policies.cors.as_deref().unwrap(),
        Cors {
            origins: vec![CorsOrigin::Exact("https://ok.example".into())],
            ..Cors::default()
        }
    );
    for name in FIELDS_OF_CORS {
        assert_eq!(label(&a, name), "invalid", "{name}");
    }
    assert!(a.fails_closed().is_none());

    // Without enable-cors, the fields do nothing.
    let a = parse_only(&[("cors-allow-origin", "https://a.example")]);
    assert!(a.policies.cors.is_none());
    assert_eq!(label(&a, "cors-allow-origin"), "ignored");
    // No valid origin: no CORS at all, as ingress-nginx's template does then.
    for value in ["foo.bar.com", "null", "https://a.example/path"] {
        let a = parse_only(&[("enable-cors", "true"), ("cors-allow-origin", value)]);
        assert!(a.policies.cors.is_none(), "{value}");
        assert_eq!(label(&a, "cors-allow-origin"), "invalid", "{value}");
    }
    // cors.go: wildcards, ports, other schemes, a trailing comma, and `*` among others.
    let origins = |value: &str| {
        let a = parse_only(&[("enable-cors", "true"), ("cors-allow-origin", value)]);
        a.policies
            .cors
            .as_deref()
            .map(|c| c.origins.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        origins("http://*.origin.cors.com, http://*.origin.com:8080"),
        [
            CorsOrigin::Subdomains {
                scheme: "http".into(),
                domain: "origin.cors.com".into(),
                port: None
            },
            CorsOrigin::Subdomains {
                scheme: "http".into(),
                domain: "origin.com".into(),
                port: Some(8080)
            },
        ]
    );
    assert_eq!(
        origins("https://origin-123.cors.com:8080, https://origin-321.cors.com:8080,").len(),
        2
    );
    assert_eq!(
        origins("myprotocol://example.org:1199"),
        [CorsOrigin::Exact("myprotocol://example.org:1199".into())]
    );
    assert_eq!(origins("*, foo.bar.com"), [CorsOrigin::Any]);
}

const FIELDS_OF_CORS: [&str; 6] = [
    "cors-allow-methods",
    "cors-max-age",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-origin",
];

#[test]
fn rate_limits_are_zoned_per_ingress() {
    let a = parse_only(&[
        ("limit-rps", "10"),
        ("limit-rpm", "100"),
        ("limit-connections", "3"),
        ("limit-burst-multiplier", "2"),
        ("limit-whitelist", "10.0.0.0/8, 192.168.0.1"),
    ]);
    let r = a.policies.rate_limit.as_deref().unwrap();
    assert_eq!(&*r.zone, "default/web");
    assert_eq!(
        (r.rps, r.rpm, r.connections, r.burst_multiplier),
        (Some(10), Some(100), Some(3), 2)
    );
    assert_eq!(r.exempt.len(), 2);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let a = parse_only(&[("limit-rps", "5")]);
    assert_eq!(a.policies.rate_limit.as_deref().unwrap().burst_multiplier, 5);
    // Invalid numbers: not applied, reported; the Ingress is served.
    let a = parse_only(&[
        ("limit-rps", "ten"),
        ("limit-rpm", "-1"),
        ("limit-burst-multiplier", "2"),
    ]);
    assert!(a.policies.rate_limit.is_none());
    assert_eq!(label(&a, "limit-rps"), "invalid");
    assert_eq!(label(&a, "limit-burst-multiplier"), "ignored");
    assert!(a.fails_closed().is_none());
    // A broken exemption list: the limit applies to everybody.
    let a = parse_only(&[("limit-rps", "5"), ("limit-allowlist", "10.0.0.0/99")]);
    assert!(a.policies.rate_limit.as_deref().unwrap().exempt.is_empty());
    assert_eq!(label(&a, "limit-allowlist"), "invalid");
}

#[test]
fn custom_headers_come_from_a_config_map_of_the_namespace() {
    let s = store(vec![
        config_map(
            "default",
            "custom-headers",
            &[
                ("My-Custom-Header", "42"),
                ("My-Custom-Header-Dollar", "$remote_addr"),
            ],
        ),
        config_map("default", "bad-name", &[("Bad Header", "1")]),
        config_map("default", "framing", &[("Content-Length", "1")]),
        config_map("other", "elsewhere", &[("X-A", "1")]),
    ]);
    // customheaders.go: the ConfigMap's headers, `$` sent as written.
    let a = parse_in(&s, &[("custom-headers", "default/custom-headers")]);
    let h = &a.policies.response_headers.as_deref().unwrap().headers;
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].1, "$remote_addr");
    assert_eq!(label(&a, "custom-headers"), "difference");
    assert!(a.fails_closed().is_none());
    // "should return status code 503 when custom-headers is configured with an invalid secret".
    for (value, why) in [
        ("default/missing", "not found"),
        ("bad-name", "not a header name"),
        ("framing", "may not be set"),
        ("other/elsewhere", "namespace"),
    ] {
        let a = parse_in(&s, &[("custom-headers", value)]);
        assert!(a.policies.response_headers.is_none(), "{value}");
        assert!(
            outcome(&a, "custom-headers").detail().unwrap().contains(why),
            "{value}"
        );
        assert!(a.fails_closed().is_some(), "{value}");
    }
}

#[test]
fn backend_protocols_map_to_upstream_protocols_and_are_served_either_way() {
    use gantry_proxy::policy::UpstreamProtocol::*;
    // backendprotocol/main.go: ValidateOptions(auto_http http https grpc grpcs fcgi), case
    // insensitive; the template upper-cases. H2C is Gantry's own.
    for (value, want, protocol) in [
        ("HTTP", "honoured", Http1),
        ("http", "honoured", Http1),
        ("HTTPS", "honoured", Https),
        ("https", "honoured", Https),
        ("GRPC", "honoured", H2c),
        ("grpc", "honoured", H2c),
        ("GRPCS", "honoured", H2),
        ("H2C", "difference", H2c),
        ("AUTO_HTTP", "refused", Http1),
        ("fcgi", "refused", Http1),
        ("SPDY", "invalid", Http1),
        ("HTTP2", "invalid", Http1),
    ] {
        let a = parse_only(&[("backend-protocol", value)]);
        assert_eq!(label(&a, "backend-protocol"), want, "{value}");
        assert_eq!(a.policies.upstream.protocol, protocol, "{value}");
        assert!(a.policies.upstream.tls.is_none(), "{value}: no proxy-ssl-secret");
        assert!(a.fails_closed().is_none(), "{value}: not fail-closed");
    }
}

#[test]
fn refused_security_annotations_fail_closed_and_others_do_not() {
    let a = parse_only(&[("auth-snippet", "proxy_set_header X 1;")]);
    assert_eq!(label(&a, "auth-snippet"), "refused");
    assert!(a.fails_closed().unwrap().contains("auth-snippet"));
    let a = parse_only(&[
        ("auth-tls-secret", "default/ca"),
        ("auth-tls-verify-client", "on"),
    ]);
    assert!(a.fails_closed().is_some());
    let a = parse_only(&[("auth-tls-verify-client", "off")]);
    assert_eq!(
        label(&a, "auth-tls-verify-client"),
        "ignored",
        "off asks for nothing"
    );
    assert!(a.fails_closed().is_none());
    let a = parse_only(&[
        ("upstream-hash-by", "$request_uri$host"),
        ("mirror-target", "https://test.env.com$request_uri"),
    ]);
    assert_eq!(label(&a, "upstream-hash-by"), "refused");
    assert_eq!(label(&a, "mirror-target"), "refused");
    assert!(a.fails_closed().is_none());
    let a = parse_only(&[
        ("enable-global-auth", "false"),
        ("proxy-buffering", "on"),
        ("proxy-buffer-size", "8k"),
    ]);
    assert_eq!(label(&a, "enable-global-auth"), "ignored");
    assert_eq!(label(&a, "proxy-buffering"), "ignored");
    assert!(a.fails_closed().is_none());
}

#[test]
fn snippets_are_never_run_and_access_directives_fail_closed() {
    // The user guide's example: only headers. Refused, and served without it.
    let a = parse_only(&[(
        "configuration-snippet",
        "more_set_headers \"Request-Id: $req_id\";",
    )]);
    assert_eq!(label(&a, "configuration-snippet"), "refused");
    assert!(outcome(&a, "configuration-snippet")
        .detail()
        .unwrap()
        .contains("custom-headers"));
    assert!(a.fails_closed().is_none());
    for snippet in [
        "deny all;",
        "allow 10.0.0.0/8;\ndeny all;",
        "location /admin {\n  auth_basic \"x\";\n}",
        "satisfy any;",
        "auth_request /auth;",
    ] {
        for name in ["configuration-snippet", "server-snippet"] {
            let a = parse_only(&[(name, snippet)]);
            assert_eq!(label(&a, name), "refused");
            assert!(a.fails_closed().is_some(), "{name}: {snippet:?}");
        }
    }
    // A commented-out deny is no directive.
    assert!(
        parse_only(&[("server-snippet", "# deny all;\nadd_header X-A 1;")])
            .fails_closed()
            .is_none()
    );
    // auth-snippet always fails closed.
    let a = parse_only(&[("auth-snippet", "proxy_set_header Foo-Header 42;")]);
    assert!(a.fails_closed().is_some());
    // ModSecurity: only a snippet that turns the engine on.
    assert!(parse_only(&[("enable-modsecurity", "true")])
        .fails_closed()
        .is_none());
    assert!(
        parse_only(&[("modsecurity-snippet", "SecRuleEngine DetectionOnly")])
            .fails_closed()
            .is_none()
    );
    assert!(parse_only(&[(
        "modsecurity-snippet",
        "SecRuleEngine On\nSecDebugLog /tmp/modsec_debug.log"
    )])
    .fails_closed()
    .is_some());
}

#[test]
fn unknown_keys_are_reported_and_values_are_cut() {
    let long = "x".repeat(500);
    let a = parse_only(&[("rewrite-targte", "/"), ("proxy-buffer-size", &long)]);
    assert_eq!(label(&a, "rewrite-targte"), "unknown");
    assert!(a.report("proxy-buffer-size").unwrap().value.chars().count() <= MAX_SHOWN + 1);
    assert!(a.fails_closed().is_none());
}

#[test]
fn every_honoured_annotation_has_a_parser() {
    // The fallback for an annotation no parser reads is `honoured` whatever the value; every
    // honoured annotation must instead judge this one.
    for entry in CATALOG {
        if !matches!(
            entry.support,
            Support::Honoured | Support::HonouredWithDifference(_)
        ) {
            continue;
        }
        let a = parse_only(&[(entry.name, "\u{1}garbage value\u{7f}")]);
        let r = a.report(entry.name).unwrap();
        assert_ne!(r.outcome, Outcome::Honoured, "{}: {r:?}", entry.name);
    }
}

#[test]
fn reports_serialize_with_a_stable_shape() {
    let a = parse_only(&[("ssl-redirect", "false"), ("auth-snippet", "x")]);
    let json = serde_json::to_value(&a.reports).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {
                "annotation": "nginx.ingress.kubernetes.io/auth-snippet",
                "value": "x",
                "outcome": "refused",
                "detail": crate::annotations::catalog::lookup("auth-snippet").map(|e| match e.support {
                    Support::Refused(w) => w,
                    _ => "",
                }),
                "fails_closed": true
            },
            {
                "annotation": "nginx.ingress.kubernetes.io/ssl-redirect",
                "value": "false",
                "outcome": "honoured",
                "detail": null,
                "fails_closed": false
            }
        ])
    );
}

#[test]
fn garbage_never_panics() {
    let values = [
        "",
        " ",
        ",",
        ",,,",
        "\u{0}",
        "\u{202e}",
        "💥",
        "$",
        "$$$1",
        "/",
        "//",
        "://",
        "*",
        "*.",
        "[::1]:80",
        "999999999999999999999999999",
        "-0",
        "+",
        "0x1f",
        "1e9",
        "true\nfalse",
        "a/b/c/d",
        "null",
        "http://*.:99999",
        "https://*.",
        "~^",
        "(",
        ")",
        "{",
        "\\",
        "'",
        "\"",
    ];
    let s = store(vec![
        opaque_secret("default", "s", &[("auth", "\u{0}:\u{0}")]),
        config_map("default", "c", &[("", "")]),
    ]);
    for entry in CATALOG {
        for v in values {
            let _ = parse_in(&s, &[(entry.name, v)]);
            let _ = parse_in(
                &s,
                &[
                    (entry.name, v),
                    ("enable-cors", "true"),
                    ("auth-type", "basic"),
                    ("limit-rps", "1"),
                ],
            );
        }
    }
    let huge = "deny all;".repeat(100_000);
    assert!(parse_only(&[("configuration-snippet", &huge)])
        .fails_closed()
        .is_some());
}

// === canary ===

fn canary_of(a: &IngressAnnotations) -> &CanarySpec {
    a.canary
        .as_ref()
        .unwrap_or_else(|| panic!("a canary: {:#?}", a.reports))
}

#[test]
fn canary_rules_are_read_on_a_canary_ingress() {
    // canary.go: "when canaried by header with value", "by weight", "weight total".
    let a = parse_only(&[
        ("canary", "true"),
        ("canary-by-header", "CanaryByHeader"),
        ("canary-by-header-value", "DoCanary"),
        ("canary-by-cookie", "Canary-By-Cookie"),
        ("canary-weight", "100"),
        ("canary-weight-total", "200"),
    ]);
    let c = canary_of(&a);
    assert_eq!(c.by_header.as_ref().unwrap(), "canarybyheader");
    assert_eq!(c.header_value.as_ref().unwrap(), "DoCanary");
    assert_eq!(c.by_cookie.as_deref(), Some("Canary-By-Cookie"));
    assert_eq!((c.weight, c.weight_total), (100, 200));
    assert!(c.sticky);
    assert!(a.not_routed.is_some());
    assert!(
        a.reports.iter().all(|r| r.outcome == Outcome::Honoured),
        "{:#?}",
        a.reports
    );
    assert_eq!(a.policies, Policies::default());
    assert!(a.fails_closed().is_none());
}

#[test]
fn canary_values_are_validated_as_ingress_nginx_does() {
    type Check = fn(&CanarySpec) -> bool;
    let cases: &[(Anns<'_>, &str, &str, Check)] = &[
        // nginx reads $http_<name> with `-` for `_`.
        (
            &[("canary-by-header", "Canary_By_Header")],
            "canary-by-header",
            "honoured",
            |c| c.by_header.as_ref().is_some_and(|h| h == "canary-by-header"),
        ),
        (
            &[("canary-by-header", "a/b")],
            "canary-by-header",
            "invalid",
            |c| c.by_header.is_none(),
        ),
        (
            &[("canary-by-header-value", "DoCanary")],
            "canary-by-header-value",
            "ignored",
            |c| c.header_value.is_none(),
        ),
        (
            &[("canary-by-header", "X"), ("canary-by-header-value", "a;b")],
            "canary-by-header-value",
            "invalid",
            |c| c.header_value.is_none() && c.by_header.is_some(),
        ),
        (
            &[("canary-by-header", "X"), ("canary-by-header-value", "Do Canary")],
            "canary-by-header-value",
            "honoured",
            |c| c.header_value.as_ref().is_some_and(|v| v == "Do Canary"),
        ),
        // "when canaried by header with value and pattern": the value wins.
        (
            &[
                ("canary-by-header", "CanaryByHeader"),
                ("canary-by-header-value", "DoCanary"),
                ("canary-by-header-pattern", "^Do[A-Z][a-z]+y$"),
            ],
            "canary-by-header-pattern",
            "ignored",
            |c| c.header_pattern.is_none() && c.header_value.is_some(),
        ),
        (
            &[
                ("canary-by-header", "CanaryByHeader"),
                ("canary-by-header-pattern", "^Do[A-Z][a-z]+y$"),
            ],
            "canary-by-header-pattern",
            "honoured",
            |c| {
                c.header_pattern
                    .as_ref()
                    .is_some_and(|p| p.is_match("DoCanary") && !p.is_match("Docanary"))
            },
        ),
        // "should routes to mainline upstream when the given Regex causes error": Gantry turns
        // the header rule off (the report says how that differs).
        (
            &[
                ("canary-by-header", "CanaryByHeader"),
                ("canary-by-header-pattern", "[][**da?$&*"),
                ("canary-by-cookie", "CanaryByCookie"),
            ],
            "canary-by-header-pattern",
            "invalid",
            |c| c.by_header.is_none() && c.header_pattern.is_none() && c.by_cookie.is_some(),
        ),
        // PCRE look-ahead: not Rust regex syntax.
        (
            &[
                ("canary-by-header", "X"),
                ("canary-by-header-pattern", "^(?=beta)"),
            ],
            "canary-by-header-pattern",
            "invalid",
            |c| c.by_header.is_none(),
        ),
        // Characters IsValidRegex refuses: the pattern is dropped, always/never decide.
        (
            &[("canary-by-header", "X"), ("canary-by-header-pattern", "a b")],
            "canary-by-header-pattern",
            "invalid",
            |c| c.by_header.is_some() && c.header_pattern.is_none(),
        ),
        (
            &[("canary-by-cookie", "a/b")],
            "canary-by-cookie",
            "invalid",
            |c| c.by_cookie.is_none(),
        ),
        (&[("canary-weight", "50")], "canary-weight", "honoured", |c| {
            c.weight == 50
        }),
        (&[("canary-weight", "abc")], "canary-weight", "invalid", |c| {
            c.weight == 0
        }),
        (&[("canary-weight", "-5")], "canary-weight", "invalid", |c| {
            c.weight == 0
        }),
        (
            &[("canary-weight", "99999999999")],
            "canary-weight",
            "honoured",
            |c| c.weight == u32::MAX,
        ),
        (
            &[("canary-weight", "1000"), ("canary-weight-total", "1000")],
            "canary-weight-total",
            "honoured",
            |c| (c.weight, c.weight_total) == (1000, 1000),
        ),
        (
            &[("canary-weight-total", "50")],
            "canary-weight-total",
            "ignored",
            |c| c.weight_total == 100,
        ),
        (
            &[("canary-weight-total", "x")],
            "canary-weight-total",
            "invalid",
            |c| c.weight_total == 100,
        ),
        (
            &[("affinity-canary-behavior", "legacy")],
            "affinity-canary-behavior",
            "honoured",
            |c| !c.sticky,
        ),
        (
            &[("affinity-canary-behavior", "sticky")],
            "affinity-canary-behavior",
            "honoured",
            |c| c.sticky,
        ),
        (
            &[("affinity-canary-behavior", "Legacy")],
            "affinity-canary-behavior",
            "invalid",
            |c| c.sticky,
        ),
    ];
    let a = parse_only(&[
        ("canary", "true"),
        ("canary-by-header", "X"),
        ("canary-by-header-pattern", "("),
    ]);
    assert_eq!(
        label(&a, "canary-by-header"),
        "difference",
        "the header rule is off"
    );
    for (pairs, name, want, check) in cases {
        let mut all = vec![("canary", "true")];
        all.extend_from_slice(pairs);
        let a = parse_only(&all);
        assert_eq!(label(&a, name), *want, "{pairs:?}");
        assert!(check(canary_of(&a)), "{pairs:?}: {:?}", a.canary);
        assert!(a.fails_closed().is_none(), "{pairs:?}");
    }
}

#[test]
fn canary_annotations_without_canary_true_have_no_effect() {
    for canary in [None, Some("false")] {
        let mut pairs = vec![("canary-weight", "10"), ("affinity-canary-behavior", "legacy")];
        pairs.extend(canary.map(|v| ("canary", v)));
        let a = parse_only(&pairs);
        assert!(a.canary.is_none() && a.not_routed.is_none(), "{canary:?}");
        // ingress-nginx: "configured but not enabled".
        assert_eq!(label(&a, "canary-weight"), "invalid", "{canary:?}");
        assert_eq!(label(&a, "affinity-canary-behavior"), "ignored");
    }
    // Not a boolean: possibly meant as a canary, so not routed at all; nothing else is read.
    let a = parse_only(&[
        ("canary", "yes"),
        ("canary-weight", "10"),
        ("auth-url", "http://auth.example"),
    ]);
    assert_eq!(label(&a, "canary"), "invalid");
    assert!(a.not_routed.is_some() && a.canary.is_none());
    assert_eq!(label(&a, "auth-url"), "ignored");
    assert!(a.fails_closed().is_none());
}

#[test]
fn a_canary_ignores_the_rest_but_balancing_and_legacy_affinity() {
    // The user guide: all other annotations are ignored (inherited from the main Ingress) except
    // load-balance, upstream-hash-by and session affinity.
    let a = parse_only(&[
        ("canary", "true"),
        ("canary-weight", "10"),
        ("auth-url", "http://auth.example/check"),
        ("auth-type", "basic"),
        ("auth-secret", "passwords"),
        ("rewrite-target", "/$1"),
        ("backend-protocol", "GRPC"),
        ("upstream-hash-by", "$arg_user"),
        ("load-balance", "ewma"),
        ("affinity", "cookie"),
        ("session-cookie-name", "aff"),
    ]);
    let c = canary_of(&a);
    assert!(
        a.fails_closed().is_none(),
        "a canary's auth annotations are not its own"
    );
    for name in [
        "auth-url",
        "auth-type",
        "auth-secret",
        "rewrite-target",
        "backend-protocol",
        "affinity",
        "session-cookie-name",
    ] {
        assert_eq!(label(&a, name), "ignored", "{name}");
    }
    assert_eq!(c.hash_by, Some(HashBy::Arg("user".into())));
    assert_eq!(c.balancer, None, "upstream-hash-by takes precedence");
    assert!(
        c.sticky && c.affinity.is_none(),
        "sticky: the main route's affinity"
    );
    assert_eq!(a.policies, Policies::default());
    assert!(!a.use_regex && a.rewrite_target.is_none());

    // legacy: the canary's own session affinity.
    let a = parse_only(&[
        ("canary", "true"),
        ("affinity-canary-behavior", "legacy"),
        ("affinity", "cookie"),
        ("session-cookie-name", "aff"),
        ("load-balance", "ewma"),
    ]);
    let c = canary_of(&a);
    assert_eq!(c.affinity.as_ref().unwrap().cookie_name, "aff");
    assert_eq!(c.balancer, None, "affinity takes precedence");
    assert_eq!(label(&a, "load-balance"), "ignored");
    let a = parse_only(&[("canary", "true"), ("load-balance", "ewma")]);
    assert_eq!(canary_of(&a).balancer, Some(gantry_proxy::Balancer::LeastRequest));
}

// === session affinity ===

#[test]
fn session_affinity_follows_ingress_nginx_validation() {
    type Check = fn(&Affinity) -> bool;
    let cases: &[(Anns<'_>, &str, &str, Check)] = &[
        (&[], "affinity", "honoured", |a| *a == Affinity::default()),
        (
            &[("affinity-mode", "persistent")],
            "affinity-mode",
            "honoured",
            |a| a.mode == AffinityMode::Persistent,
        ),
        (
            &[("affinity-mode", "balanced")],
            "affinity-mode",
            "honoured",
            |a| a.mode == AffinityMode::Balanced,
        ),
        (
            &[("affinity-mode", "Persistent")],
            "affinity-mode",
            "invalid",
            |a| a.mode == AffinityMode::Balanced,
        ),
        // affinity.go: "should set sticky cookie SERVERID".
        (
            &[("session-cookie-name", "SERVERID")],
            "session-cookie-name",
            "honoured",
            |a| a.cookie_name == "SERVERID",
        ),
        (
            &[("session-cookie-name", "my cookie")],
            "session-cookie-name",
            "invalid",
            |a| a.cookie_name == "INGRESSCOOKIE",
        ),
        (
            &[("session-cookie-name", "a/b")],
            "session-cookie-name",
            "invalid",
            |a| a.cookie_name == "INGRESSCOOKIE",
        ),
        (
            &[("session-cookie-path", "/something")],
            "session-cookie-path",
            "honoured",
            |a| a.path.as_deref() == Some("/something"),
        ),
        (
            &[("session-cookie-path", "/a;b")],
            "session-cookie-path",
            "invalid",
            |a| a.path.is_none(),
        ),
        (
            &[("session-cookie-path", "/$x")],
            "session-cookie-path",
            "invalid",
            |a| a.path.is_none(),
        ),
        // "should set cookie with domain".
        (
            &[("session-cookie-domain", "foo.bar")],
            "session-cookie-domain",
            "honoured",
            |a| a.domain.as_deref() == Some("foo.bar"),
        ),
        (
            &[("session-cookie-domain", "a;b")],
            "session-cookie-domain",
            "invalid",
            |a| a.domain.is_none(),
        ),
        (
            &[("session-cookie-samesite", "None")],
            "session-cookie-samesite",
            "honoured",
            |a| a.same_site == Some(SameSite::None),
        ),
        (
            &[("session-cookie-samesite", "lax")],
            "session-cookie-samesite",
            "honoured",
            |a| a.same_site == Some(SameSite::Lax),
        ),
        (
            &[("session-cookie-samesite", "always")],
            "session-cookie-samesite",
            "invalid",
            |a| a.same_site.is_none(),
        ),
        (
            &[("session-cookie-conditional-samesite-none", "true")],
            "session-cookie-conditional-samesite-none",
            "honoured",
            |a| a.conditional_same_site_none,
        ),
        // "should set secure in cookie with provided true annotation on http".
        (
            &[("session-cookie-secure", "true")],
            "session-cookie-secure",
            "honoured",
            |a| a.secure,
        ),
        (
            &[("session-cookie-secure", "yes")],
            "session-cookie-secure",
            "invalid",
            |a| !a.secure,
        ),
        // "should set cookie with expires".
        (
            &[("session-cookie-expires", "172800")],
            "session-cookie-expires",
            "honoured",
            |a| a.expires == Some(172_800),
        ),
        (
            &[("session-cookie-expires", "2d")],
            "session-cookie-expires",
            "invalid",
            |a| a.expires.is_none(),
        ),
        (
            &[("session-cookie-max-age", "259200")],
            "session-cookie-max-age",
            "honoured",
            |a| a.max_age == Some(259_200),
        ),
        (
            &[("session-cookie-change-on-failure", "true")],
            "session-cookie-change-on-failure",
            "honoured",
            |a| a.change_on_failure,
        ),
    ];
    for (pairs, name, want, check) in cases {
        let mut all = vec![("affinity", "cookie")];
        all.extend_from_slice(pairs);
        let a = parse_only(&all);
        assert_eq!(label(&a, name), *want, "{pairs:?}");
        let affinity = a.policies.affinity.as_ref().expect("affinity");
        assert!(affinity.validate().is_ok(), "{pairs:?}");
        assert!(check(affinity), "{pairs:?}: {affinity:?}");
        assert!(a.fails_closed().is_none());
    }
}

#[test]
fn affinity_settings_need_affinity_cookie() {
    let a = parse_only(&[("session-cookie-name", "route"), ("affinity-mode", "persistent")]);
    assert!(a.policies.affinity.is_none());
    assert_eq!(label(&a, "session-cookie-name"), "ignored");
    assert_eq!(label(&a, "affinity-mode"), "ignored");
    let a = parse_only(&[("affinity", "Cookie"), ("session-cookie-name", "route")]);
    assert!(a.policies.affinity.is_none());
    assert_eq!(label(&a, "affinity"), "invalid");
    assert_eq!(label(&a, "session-cookie-name"), "ignored");
    // affinity.go: "should warn user when use-regex is true and session-cookie-path is not set".
    let a = parse_only(&[("affinity", "cookie"), ("use-regex", "true")]);
    assert!(a.policies.affinity.is_some());
    assert!(outcome(&a, "affinity")
        .detail()
        .unwrap()
        .contains("session-cookie-path"));
    let a = parse_only(&[
        ("affinity", "cookie"),
        ("use-regex", "true"),
        ("session-cookie-path", "/foo/bar"),
    ]);
    assert_eq!(label(&a, "affinity"), "honoured");
}

// === upstream-hash-by, load-balance ===

#[test]
fn upstream_hash_by_takes_one_variable_and_affinity_wins() {
    let cases: &[(Anns<'_>, &str, &str, Option<HashBy>)] = &[
        (
            &[("upstream-hash-by", "$request_uri")],
            "upstream-hash-by",
            "honoured",
            Some(HashBy::RequestUri),
        ),
        (
            &[("upstream-hash-by", "${request_uri}")],
            "upstream-hash-by",
            "honoured",
            Some(HashBy::RequestUri),
        ),
        (
            &[("upstream-hash-by", "$remote_addr")],
            "upstream-hash-by",
            "honoured",
            Some(HashBy::RemoteAddr),
        ),
        (
            &[("upstream-hash-by", "$cookie_sid")],
            "upstream-hash-by",
            "honoured",
            Some(HashBy::Cookie("sid".into())),
        ),
        // The user guide's combinations: nginx variables are not templated.
        (
            &[("upstream-hash-by", "$request_uri$host")],
            "upstream-hash-by",
            "refused",
            None,
        ),
        (
            &[("upstream-hash-by", "${request_uri}-text-value")],
            "upstream-hash-by",
            "refused",
            None,
        ),
        (
            &[("upstream-hash-by", "$host")],
            "upstream-hash-by",
            "refused",
            None,
        ),
        (
            &[("upstream-hash-by", "$request_uri;")],
            "upstream-hash-by",
            "invalid",
            None,
        ),
        (
            &[("upstream-hash-by", "$request_uri"), ("affinity", "cookie")],
            "upstream-hash-by",
            "ignored",
            None,
        ),
        (
            &[
                ("upstream-hash-by", "$request_uri"),
                ("upstream-hash-by-subset", "true"),
            ],
            "upstream-hash-by-subset",
            "refused",
            Some(HashBy::RequestUri),
        ),
        (
            &[
                ("upstream-hash-by", "$request_uri"),
                ("upstream-hash-by-subset", "true"),
                ("upstream-hash-by-subset-size", "3"),
            ],
            "upstream-hash-by-subset-size",
            "refused",
            Some(HashBy::RequestUri),
        ),
        (
            &[
                ("upstream-hash-by", "$request_uri"),
                ("upstream-hash-by-subset", "false"),
            ],
            "upstream-hash-by-subset",
            "ignored",
            Some(HashBy::RequestUri),
        ),
        (
            &[("upstream-hash-by-subset", "true")],
            "upstream-hash-by-subset",
            "ignored",
            None,
        ),
        (
            &[("upstream-hash-by-subset-size", "5")],
            "upstream-hash-by-subset-size",
            "ignored",
            None,
        ),
    ];
    for (pairs, name, want, hash) in cases {
        let a = parse_only(pairs);
        assert_eq!(label(&a, name), *want, "{pairs:?}");
        assert_eq!(a.policies.hash_by, *hash, "{pairs:?}");
        assert!(a.fails_closed().is_none());
    }
}

#[test]
fn load_balance_maps_round_robin_and_ewma() {
    use gantry_proxy::Balancer::*;
    let cases: &[(Anns<'_>, &str, Option<gantry_proxy::Balancer>)] = &[
        (&[("load-balance", "round_robin")], "honoured", Some(RoundRobin)),
        (&[("load-balance", "ewma")], "difference", Some(LeastRequest)),
        (&[("load-balance", "chash")], "refused", None),
        (&[("load-balance", "chashsubset")], "refused", None),
        (&[("load-balance", "sticky_balanced")], "refused", None),
        (&[("load-balance", "ROUND_ROBIN")], "invalid", None),
        (&[("load-balance", "least_conn")], "invalid", None),
        (
            &[("load-balance", "ewma"), ("upstream-hash-by", "$request_uri")],
            "ignored",
            None,
        ),
        (
            &[("load-balance", "round_robin"), ("affinity", "cookie")],
            "ignored",
            None,
        ),
    ];
    for (pairs, want, balancer) in cases {
        let a = parse_only(pairs);
        assert_eq!(label(&a, "load-balance"), *want, "{pairs:?}");
        assert_eq!(a.policies.balancer, *balancer, "{pairs:?}");
    }
}

// === backend TLS ===

struct BackendPki {
    ca: String,
    client_cert: String,
    client_key: String,
}

fn backend_pki() -> BackendPki {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gantry.client".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    BackendPki {
        ca: ca.pem(),
        client_cert: cert.pem(),
        client_key: key.serialize_pem(),
    }
}

#[test]
fn proxy_ssl_builds_the_backend_tls_settings() {
    let pki = backend_pki();
    let s = store(vec![
        opaque_secret(
            "default",
            "full",
            &[
                ("ca.crt", &pki.ca),
                ("tls.crt", &pki.client_cert),
                ("tls.key", &pki.client_key),
            ],
        ),
        opaque_secret("default", "ca-only", &[("ca.crt", &pki.ca)]),
        opaque_secret(
            "default",
            "client-only",
            &[("tls.crt", &pki.client_cert), ("tls.key", &pki.client_key)],
        ),
    ]);
    // proxyssl.go: "should set valid proxy-ssl-secret, proxy-ssl-verify to on, proxy-ssl-verify-depth
    // to 2, and proxy-ssl-server-name to on".
    let a = parse_in(
        &s,
        &[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", "default/full"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-verify-depth", "2"),
            ("proxy-ssl-server-name", "on"),
            ("proxy-ssl-name", "backend.internal"),
        ],
    );
    let tls = a.policies.upstream.tls.as_ref().expect("tls");
    assert!(tls.verify() && tls.sni() && tls.has_client_cert());
    assert_eq!((tls.verify_depth(), tls.ca_len()), (2, 1));
    assert_eq!(tls.name().to_str(), "backend.internal");
    assert!(
        a.reports.iter().all(|r| r.outcome == Outcome::Honoured),
        "{:#?}",
        a.reports
    );
    assert!(a.fails_closed().is_none());

    // "should set valid proxy-ssl-secret, proxy-ssl-ciphers to HIGH:!AES" / "proxy-ssl-protocols":
    // reported, not applied (rustls).
    let a = parse_in(
        &s,
        &[
            ("backend-protocol", "GRPCS"),
            ("proxy-ssl-secret", "default/ca-only"),
            ("proxy-ssl-ciphers", "HIGH:!AES"),
            ("proxy-ssl-protocols", "TLSv1.2 TLSv1.3"),
        ],
    );
    let tls = a.policies.upstream.tls.as_ref().unwrap();
    assert!(!tls.verify() && !tls.sni() && !tls.has_client_cert());
    assert_eq!(label(&a, "proxy-ssl-ciphers"), "ignored");
    assert_eq!(label(&a, "proxy-ssl-protocols"), "ignored");

    // Client certificate only, verification off: fine.
    let a = parse_in(
        &s,
        &[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", "default/client-only"),
        ],
    );
    assert!(a.policies.upstream.tls.as_ref().unwrap().has_client_cert());
    assert_eq!(label(&a, "proxy-ssl-secret"), "honoured");
}

#[test]
fn proxy_ssl_problems_fail_closed_only_when_verification_was_asked_for() {
    let pki = backend_pki();
    let s = store(vec![
        opaque_secret("default", "ca-only", &[("ca.crt", &pki.ca)]),
        opaque_secret(
            "default",
            "client-only",
            &[("tls.crt", &pki.client_cert), ("tls.key", &pki.client_key)],
        ),
        opaque_secret("default", "garbage", &[("ca.crt", "not a certificate")]),
        opaque_secret("default", "empty", &[("other", "x")]),
        opaque_secret("other", "ca-only", &[("ca.crt", &pki.ca)]),
    ]);
    // (secret, its outcome with verification on, and off, why it fails closed with it on)
    let cases: &[(Option<&str>, &str, &str, &str)] = &[
        (None, "", "", "proxy-ssl-verify"),
        (Some("default/missing"), "invalid", "invalid", "not found"),
        (Some("ca-only"), "invalid", "invalid", "namespace/name"),
        (Some("other/ca-only"), "refused", "refused", "namespace"),
        (Some("default/client-only"), "invalid", "honoured", "no ca.crt"),
        (Some("default/garbage"), "invalid", "invalid", "ca.crt"),
        (Some("default/empty"), "invalid", "invalid", "neither"),
    ];
    for (secret, label_on, label_off, why) in cases {
        for verify in ["on", "off"] {
            let mut pairs = vec![
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-verify", verify),
                ("proxy-ssl-name", "backend.internal"),
            ];
            pairs.extend(secret.map(|s| ("proxy-ssl-secret", s)));
            let a = parse_in(&s, &pairs);
            if verify == "on" {
                let reason = a
                    .fails_closed()
                    .unwrap_or_else(|| panic!("{secret:?} fails closed"));
                assert!(reason.contains(why), "{secret:?}: {reason}");
            } else {
                assert!(
                    a.fails_closed().is_none(),
                    "{secret:?}: served with verification off"
                );
            }
            if secret.is_some() {
                let want = if verify == "on" { label_on } else { label_off };
                assert_eq!(label(&a, "proxy-ssl-secret"), *want, "{secret:?} {verify}");
            }
        }
    }
    // Verification off and a broken Secret: TLS without it, and the report says so.
    let a = parse_in(
        &s,
        &[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", "default/missing"),
        ],
    );
    assert_eq!(
        a.policies.upstream.tls.as_deref(),
        Some(&gantry_proxy::policy::UpstreamTls::new())
    );
    assert!(outcome(&a, "proxy-ssl-secret")
        .detail()
        .unwrap()
        .contains("without it"));
    assert!(a.report("proxy-ssl-secret").unwrap().reference.is_some());
}

#[test]
fn proxy_ssl_settings_are_validated_and_need_a_secret_and_a_tls_protocol() {
    let pki = backend_pki();
    let s = store(vec![opaque_secret("default", "ca", &[("ca.crt", &pki.ca)])]);
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = vec![("backend-protocol", "HTTPS"), ("proxy-ssl-secret", "default/ca")];
        pairs.extend_from_slice(extra);
        parse_in(&s, &pairs)
    };
    let cases: &[(Anns<'_>, &str, &str)] = &[
        (&[("proxy-ssl-name", "$host")], "proxy-ssl-name", "refused"),
        (&[("proxy-ssl-name", "not a name!")], "proxy-ssl-name", "invalid"),
        (&[("proxy-ssl-name", "10.0.0.1")], "proxy-ssl-name", "honoured"),
        (
            &[("proxy-ssl-server-name", "yes")],
            "proxy-ssl-server-name",
            "invalid",
        ),
        (&[("proxy-ssl-verify", "true")], "proxy-ssl-verify", "invalid"),
        (
            &[("proxy-ssl-verify-depth", "0")],
            "proxy-ssl-verify-depth",
            "ignored",
        ),
        (
            &[("proxy-ssl-verify-depth", "-1")],
            "proxy-ssl-verify-depth",
            "invalid",
        ),
        (
            &[("proxy-ssl-verify-depth", "3")],
            "proxy-ssl-verify-depth",
            "ignored",
        ),
        (
            &[
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "b.internal"),
                ("proxy-ssl-verify-depth", "3"),
            ],
            "proxy-ssl-verify-depth",
            "honoured",
        ),
        (
            &[("proxy-ssl-ciphers", "HIGH;rm")],
            "proxy-ssl-ciphers",
            "invalid",
        ),
        (
            &[("proxy-ssl-protocols", "TLSv1")],
            "proxy-ssl-protocols",
            "invalid",
        ),
        // Verification without proxy-ssl-name checks `upstream_balancer`, as in ingress-nginx:
        // served, and reported because it cannot work.
        (&[("proxy-ssl-verify", "on")], "proxy-ssl-verify", "invalid"),
    ];
    for (pairs, name, want) in cases {
        let a = with(pairs);
        assert_eq!(label(&a, name), *want, "{pairs:?}");
        assert!(a.fails_closed().is_none(), "{pairs:?}");
    }
    assert_eq!(
        with(&[("proxy-ssl-verify-depth", "3")])
            .policies
            .upstream
            .tls
            .unwrap()
            .verify_depth(),
        3
    );
    assert!(with(&[("proxy-ssl-server-name", "on")])
        .policies
        .upstream
        .tls
        .unwrap()
        .sni());

    // Without proxy-ssl-secret the others do nothing (proxyssl.go returns an empty config).
    let a = parse_only(&[
        ("backend-protocol", "HTTPS"),
        ("proxy-ssl-verify", "off"),
        ("proxy-ssl-name", "backend.internal"),
        ("proxy-ssl-server-name", "on"),
    ]);
    assert!(a.policies.upstream.tls.is_none());
    for name in ["proxy-ssl-verify", "proxy-ssl-name", "proxy-ssl-server-name"] {
        assert_eq!(label(&a, name), "ignored", "{name}");
    }
    // Clear-text protocols: nothing to verify, nothing read (the Secret is not even looked up).
    for protocol in ["HTTP", "GRPC", "H2C"] {
        let a = parse_only(&[
            ("backend-protocol", protocol),
            ("proxy-ssl-secret", "default/missing"),
            ("proxy-ssl-verify", "on"),
        ]);
        assert!(a.fails_closed().is_none(), "{protocol}");
        assert!(a.policies.upstream.tls.is_none());
        assert_eq!(label(&a, "proxy-ssl-secret"), "ignored");
        assert_eq!(label(&a, "proxy-ssl-verify"), "ignored");
    }
}

#[test]
fn proxy_next_upstream_family_becomes_a_retry_policy() {
    use gantry_proxy::policy::{Retry, RetryOn};
    let on = |words: &str| {
        words
            .split_whitespace()
            .map(|w| RetryOn::from_word(w).unwrap())
            .fold(RetryOn::empty(), |a, b| a | b)
    };
    // (annotations, retry, outcome of each annotation present)
    let cases: Vec<(Anns<'_>, Option<Retry>, Anns<'_>)> = vec![
        (&[], None, &[]),
        // ingress-nginx's e2e test (test/e2e/annotations/proxy.go).
        (
            &[
                ("proxy-next-upstream", "error timeout http_502"),
                ("proxy-next-upstream-timeout", "999999"),
                ("proxy-next-upstream-tries", "888888"),
            ],
            Some(Retry {
                on: on("error timeout http_502"),
                tries: 888_888,
                timeout: Some(Duration::from_secs(999_999)),
            }),
            &[
                ("proxy-next-upstream", "difference"),
                ("proxy-next-upstream-timeout", "honoured"),
                ("proxy-next-upstream-tries", "honoured"),
            ],
        ),
        // One of them: ingress-nginx's defaults for the others.
        (
            &[("proxy-next-upstream-tries", "1")],
            Some(Retry {
                tries: 1,
                ..Retry::INGRESS_NGINX
            }),
            &[("proxy-next-upstream-tries", "honoured")],
        ),
        (
            &[("proxy-next-upstream", "error timeout http_503 non_idempotent")],
            Some(Retry {
                on: on("error timeout http_503 non_idempotent"),
                ..Retry::INGRESS_NGINX
            }),
            &[("proxy-next-upstream", "difference")],
        ),
        // `off` anywhere wins, as in nginx.
        (
            &[("proxy-next-upstream", "error off")],
            Some(Retry {
                on: RetryOn::empty(),
                ..Retry::INGRESS_NGINX
            }),
            &[("proxy-next-upstream", "honoured")],
        ),
        // Invalid values: ingress-nginx's defaults.
        (
            &[
                ("proxy-next-upstream", "error http_501"),
                ("proxy-next-upstream-tries", "-1"),
                ("proxy-next-upstream-timeout", "10s"),
            ],
            Some(Retry::INGRESS_NGINX),
            &[
                ("proxy-next-upstream", "invalid"),
                ("proxy-next-upstream-tries", "invalid"),
                ("proxy-next-upstream-timeout", "invalid"),
            ],
        ),
        (
            &[
                ("proxy-next-upstream", "5xx"),
                ("proxy-next-upstream-timeout", "0"),
            ],
            Some(Retry::INGRESS_NGINX),
            &[
                ("proxy-next-upstream", "invalid"),
                ("proxy-next-upstream-timeout", "honoured"),
            ],
        ),
    ];
    for (anns, retry, outcomes) in cases {
        let a = parse_only(anns);
        assert_eq!(a.policies.retry, retry, "{anns:?}");
        for (name, want) in outcomes {
            assert_eq!(label(&a, name), *want, "{name} in {anns:?}");
        }
        assert!(a.fails_closed().is_none());
    }
}

#[test]
fn custom_http_errors_and_default_backend() {
    // (annotations, codes, intercept upstream, default backend, outcomes)
    type Case<'a> = (Anns<'a>, Option<Vec<u16>>, bool, Option<&'a str>, Anns<'a>);
    let cases: Vec<Case<'_>> = vec![
        // The user guide's example and ingress-nginx's e2e values.
        (
            &[("custom-http-errors", "404,415")],
            Some(vec![404, 415]),
            true,
            None,
            &[("custom-http-errors", "difference")],
        ),
        (
            &[
                ("custom-http-errors", "404, 503"),
                ("default-backend", "from-annotation"),
            ],
            Some(vec![404, 503]),
            true,
            Some("from-annotation"),
            &[
                ("custom-http-errors", "difference"),
                ("default-backend", "honoured"),
            ],
        ),
        (
            &[
                ("custom-http-errors", "404"),
                ("disable-proxy-intercept-errors", "true"),
                ("default-backend", "echo"),
            ],
            Some(vec![404]),
            false,
            Some("echo"),
            &[("disable-proxy-intercept-errors", "honoured")],
        ),
        (
            &[("custom-http-errors", "503,503,500")],
            Some(vec![500, 503]),
            true,
            None,
            &[],
        ),
        // Invalid values.
        (
            &[("custom-http-errors", "200,404")],
            None,
            true,
            None,
            &[("custom-http-errors", "invalid")],
        ),
        (
            &[("custom-http-errors", "4044")],
            None,
            true,
            None,
            &[("custom-http-errors", "invalid")],
        ),
        (
            &[("custom-http-errors", "abc")],
            None,
            true,
            None,
            &[("custom-http-errors", "invalid")],
        ),
        (
            &[("custom-http-errors", ",")],
            None,
            true,
            None,
            &[("custom-http-errors", "invalid")],
        ),
        (
            &[("default-backend", "Bad_Name")],
            None,
            true,
            None,
            &[("default-backend", "invalid")],
        ),
        (
            &[("default-backend", "ns/svc")],
            None,
            true,
            None,
            &[("default-backend", "invalid")],
        ),
        (
            &[("disable-proxy-intercept-errors", "true")],
            None,
            true,
            None,
            &[("disable-proxy-intercept-errors", "ignored")],
        ),
        (
            &[
                ("custom-http-errors", "404"),
                ("disable-proxy-intercept-errors", "maybe"),
            ],
            Some(vec![404]),
            true,
            None,
            &[("disable-proxy-intercept-errors", "invalid")],
        ),
    ];
    for (anns, codes, intercept, default_backend, outcomes) in cases {
        let a = parse_only(anns);
        let errors = a.policies.custom_errors.as_ref();
        assert_eq!(errors.map(|e| e.codes().to_vec()), codes, "{anns:?}");
        if let Some(e) = errors {
            assert_eq!(e.intercept_upstream, intercept, "{anns:?}");
        }
        assert_eq!(a.default_backend.as_deref(), default_backend, "{anns:?}");
        for (name, want) in outcomes {
            assert_eq!(label(&a, name), *want, "{name} in {anns:?}");
        }
        assert!(a.fails_closed().is_none());
    }
}

/// A CA certificate (PEM) for `auth-tls-secret`, the same for the whole test run.
pub(crate) fn client_ca_pem() -> &'static str {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authtls CA");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    })
}

/// The `auth-tls-secret` Secret `default/ca-secret` of ingress-nginx's client-certs example.
pub(crate) fn client_ca_secret() -> Object {
    opaque_secret("default", "ca-secret", &[("ca.crt", client_ca_pem())])
}

#[test]
fn auth_tls_defaults_are_ingress_nginx_s() {
    let s = store(vec![client_ca_secret()]);
    let a = parse_in(&s, &[("auth-tls-secret", "default/ca-secret")]);
    assert_eq!(label(&a, "auth-tls-secret"), "honoured");
    assert!(a.fails_closed().is_none());
    let c = a
        .policies
        .client_cert
        .as_ref()
        .expect("client certificate authentication");
    assert_eq!(c.verify, gantry_proxy::policy::VerifyClient::On);
    assert_eq!(c.ca.depth(), 1);
    assert_eq!(c.ca.ca_len(), 1);
    assert!(c.error_page.is_none());
    assert!(!c.pass_certificate);
    assert!(c.match_dn.is_none());
    // An empty namespace is the Ingress's own, as k8s.ParseNameNS reads "/name".
    let a = parse_in(&s, &[("auth-tls-secret", "/ca-secret")]);
    assert!(a.policies.client_cert.is_some());
}

#[test]
fn auth_tls_values_from_ingress_nginx_s_tests_are_honoured() {
    use gantry_proxy::policy::VerifyClient;
    let s = store(vec![client_ca_secret()]);
    let a = parse_in(
        &s,
        &[
            ("auth-tls-secret", "default/ca-secret"),
            ("auth-tls-verify-client", "off"),
            ("auth-tls-verify-depth", "2"),
            ("auth-tls-error-page", "ok.com/error"),
            ("auth-tls-pass-certificate-to-upstream", "true"),
            ("auth-tls-match-cn", "CN=(hello-app|ok|goodbye)"),
        ],
    );
    assert!(a.fails_closed().is_none(), "{:#?}", a.reports);
    for name in [
        "auth-tls-secret",
        "auth-tls-verify-client",
        "auth-tls-verify-depth",
        "auth-tls-error-page",
        "auth-tls-pass-certificate-to-upstream",
        "auth-tls-match-cn",
    ] {
        assert_eq!(label(&a, name), "honoured", "{name}");
    }
    let c = a.policies.client_cert.as_ref().unwrap();
    assert_eq!(c.verify, VerifyClient::Off);
    assert_eq!(c.ca.depth(), 2);
    assert_eq!(c.error_page.as_ref().unwrap(), "ok.com/error");
    assert!(c.pass_certificate);
    assert_eq!(c.match_dn.as_ref().unwrap().as_str(), "CN=(hello-app|ok|goodbye)");

    // (verify-client, verify-depth, error page, expected mode, depth, page kept, error-page label)
    let cases: &[(&str, &str, &str, VerifyClient, u32, bool, &str)] = &[
        (
            "on",
            "1",
            "http://errors.example/error",
            VerifyClient::On,
            1,
            true,
            "honoured",
        ),
        (
            "optional",
            "0",
            "https://errors.example:8443/",
            VerifyClient::Optional,
            1,
            true,
            "honoured",
        ),
        (
            "optional_no_ca",
            "3",
            "@401",
            VerifyClient::OptionalNoCa,
            3,
            false,
            "difference",
        ),
        (
            "on",
            "1",
            "@four_oh_one",
            VerifyClient::On,
            1,
            false,
            "difference",
        ),
        ("on", "1", "/error", VerifyClient::On, 1, false, "difference"),
    ];
    for &(verify, depth, page, mode, want_depth, kept, page_label) in cases {
        let a = parse_in(
            &s,
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-verify-client", verify),
                ("auth-tls-verify-depth", depth),
                ("auth-tls-error-page", page),
            ],
        );
        assert!(
            a.fails_closed().is_none(),
            "{verify} {depth} {page}: {:#?}",
            a.reports
        );
        let c = a.policies.client_cert.as_ref().unwrap();
        assert_eq!(c.verify, mode, "{verify}");
        assert_eq!(c.ca.depth(), want_depth, "{depth}");
        assert_eq!(c.error_page.is_some(), kept, "{page}");
        assert_eq!(label(&a, "auth-tls-error-page"), page_label, "{page}");
    }
}

#[test]
fn invalid_auth_tls_values_and_secrets_fail_closed() {
    let garbage = opaque_secret("default", "garbage", &[("ca.crt", "not a certificate")]);
    let no_ca = opaque_secret("default", "no-ca", &[("tls.crt", client_ca_pem())]);
    let bad_crl = opaque_secret(
        "default",
        "bad-crl",
        &[("ca.crt", client_ca_pem()), ("ca.crl", "not a CRL")],
    );
    let s = store(vec![client_ca_secret(), garbage, no_ca, bad_crl]);
    let ok = ("auth-tls-secret", "default/ca-secret");
    // (annotations, the annotation at fault, its label), from ingress-nginx's TestInvalidAnnotations
    // and its validators.
    let cases: &[(Anns<'_>, &str, &str)] = &[
        (&[("auth-tls-secret", "ca-secret")], "auth-tls-secret", "invalid"),
        (&[("auth-tls-secret", "a/b/c")], "auth-tls-secret", "invalid"),
        (
            &[("auth-tls-secret", "default/Bad_Name")],
            "auth-tls-secret",
            "invalid",
        ),
        (
            &[("auth-tls-secret", "nondefault/ca-secret")],
            "auth-tls-secret",
            "refused",
        ),
        (
            &[("auth-tls-secret", "default/missing")],
            "auth-tls-secret",
            "invalid",
        ),
        (
            &[("auth-tls-secret", "default/garbage")],
            "auth-tls-secret",
            "invalid",
        ),
        (
            &[("auth-tls-secret", "default/no-ca")],
            "auth-tls-secret",
            "invalid",
        ),
        (
            &[("auth-tls-secret", "default/bad-crl")],
            "auth-tls-secret",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-verify-client", "w00t")],
            "auth-tls-verify-client",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-verify-client", "ON")],
            "auth-tls-verify-client",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-verify-depth", "abcd")],
            "auth-tls-verify-depth",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-verify-depth", "-1")],
            "auth-tls-verify-depth",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-verify-depth", "99999999999")],
            "auth-tls-verify-depth",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-pass-certificate-to-upstream", "nahh")],
            "auth-tls-pass-certificate-to-upstream",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-match-cn", "<script>nope</script>")],
            "auth-tls-match-cn",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-match-cn", "CN=(unclosed")],
            "auth-tls-match-cn",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-error-page", "javascript:alert(1)")],
            "auth-tls-error-page",
            "invalid",
        ),
        (
            &[ok, ("auth-tls-error-page", "http://a.example/x?y=1")],
            "auth-tls-error-page",
            "invalid",
        ),
        // Without the CA, a request for client certificates is not served unchecked.
        (
            &[("auth-tls-verify-client", "on")],
            "auth-tls-verify-client",
            "invalid",
        ),
        (
            &[("auth-tls-match-cn", "CN=client")],
            "auth-tls-match-cn",
            "invalid",
        ),
        (
            &[("auth-tls-pass-certificate-to-upstream", "true")],
            "auth-tls-pass-certificate-to-upstream",
            "invalid",
        ),
    ];
    for (pairs, at_fault, want) in cases {
        let a = parse_in(&s, pairs);
        assert_eq!(label(&a, at_fault), *want, "{pairs:?}");
        let why = a
            .fails_closed()
            .unwrap_or_else(|| panic!("{pairs:?} must fail closed"));
        assert!(why.contains(at_fault), "{pairs:?}: {why}");
        assert!(a.policies.client_cert.is_none(), "{pairs:?}");
    }
    // The missing Secret is a reference problem (a diagnostic naming the Secret, watched in a
    // cluster).
    let a = parse_in(&s, &[("auth-tls-secret", "default/missing")]);
    let r = a.report("auth-tls-secret").unwrap().reference.as_ref().unwrap();
    assert!(r.missing);
    assert_eq!(r.object, "default/missing");
}

#[test]
fn harmless_auth_tls_values_without_a_secret_are_ignored() {
    let a = parse_only(&[
        ("auth-tls-verify-client", "off"),
        ("auth-tls-verify-depth", "2"),
        ("auth-tls-error-page", "http://errors.example/"),
        ("auth-tls-pass-certificate-to-upstream", "false"),
    ]);
    assert!(a.fails_closed().is_none());
    for name in [
        "auth-tls-verify-client",
        "auth-tls-verify-depth",
        "auth-tls-error-page",
        "auth-tls-pass-certificate-to-upstream",
    ] {
        assert_eq!(label(&a, name), "ignored", "{name}");
    }
    assert!(a.policies.client_cert.is_none());
}

#[test]
fn the_auth_tls_secret_is_a_reference_whatever_the_other_values() {
    let key = ObjectKey::new("default", "web");
    for pairs in [
        vec![("auth-tls-secret", "default/ca-secret")],
        vec![
            ("auth-tls-secret", "default/ca-secret"),
            ("auth-tls-verify-client", "w00t"),
            ("auth-tls-match-cn", "nope"),
        ],
    ] {
        let refs = references::references_of(&key, Some(&annotations(&pairs)));
        assert_eq!(
            refs,
            vec![(crate::store::Kind::Secret, ObjectKey::new("default", "ca-secret"))],
            "{pairs:?}"
        );
    }
}

// === external authentication (auth-url) ===

/// The annotation sets of ingress-nginx's docs and e2e tests (`test/e2e/annotations/auth.go`),
/// valid, invalid and conflicting: whether the Ingress fails closed, and each annotation's outcome.
#[test]
fn external_auth_annotations_are_validated_as_ingress_nginx_does() {
    const URL: (&str, &str) = ("auth-url", "http://foo.bar/basic-auth/user/password");
    let cases: &[(Anns<'_>, bool, Anns<'_>)] = &[
        // Valid.
        (&[URL], false, &[("auth-url", "difference")]),
        (
            &[
                URL,
                ("auth-signin", "http://$host/auth/start"),
                ("auth-signin-redirect-param", "orig"),
                ("auth-method", "POST"),
            ],
            false,
            &[
                ("auth-signin", "difference"),
                ("auth-signin-redirect-param", "difference"),
                ("auth-method", "honoured"),
            ],
        ),
        (
            &[
                URL,
                ("auth-cache-key", "foo"),
                ("auth-cache-duration", "200 202 401 30m"),
            ],
            false,
            &[
                ("auth-cache-key", "difference"),
                ("auth-cache-duration", "difference"),
            ],
        ),
        (
            &[
                URL,
                ("auth-keepalive", "123"),
                ("auth-keepalive-requests", "456"),
                ("auth-keepalive-timeout", "789"),
                ("auth-keepalive-share-vars", "true"),
                ("auth-always-set-cookie", "true"),
                ("auth-request-redirect", "http://foo.com/redirect"),
                ("auth-response-headers", "X-User, X-Email,"),
            ],
            false,
            &[
                ("auth-keepalive", "difference"),
                ("auth-keepalive-requests", "difference"),
                ("auth-keepalive-timeout", "honoured"),
                ("auth-keepalive-share-vars", "difference"),
                ("auth-always-set-cookie", "honoured"),
                ("auth-request-redirect", "honoured"),
                ("auth-response-headers", "difference"),
            ],
        ),
        // Out of range keep-alive values: ingress-nginx turns keep-alive off and serves (its e2e
        // test "auth-keepalive is negative"); a variable in the host pools anyway.
        (
            &[URL, ("auth-keepalive", "-1")],
            false,
            &[("auth-keepalive", "difference")],
        ),
        (
            &[URL, ("auth-keepalive-requests", "0")],
            false,
            &[("auth-keepalive-requests", "difference")],
        ),
        (
            &[URL, ("auth-keepalive-timeout", "-5")],
            false,
            &[("auth-keepalive-timeout", "difference")],
        ),
        (
            &[("auth-url", "http://$host/path"), ("auth-keepalive", "123")],
            false,
            &[("auth-url", "difference"), ("auth-keepalive", "difference")],
        ),
        // Without auth-url, the family has no effect (as in ingress-nginx) and does not fail.
        (
            &[
                ("auth-signin", "http://$host/start"),
                ("auth-method", "nonsense"),
                ("auth-keepalive", "x"),
            ],
            false,
            &[
                ("auth-signin", "ignored"),
                ("auth-method", "ignored"),
                ("auth-keepalive", "ignored"),
            ],
        ),
        (&[("auth-url", "")], false, &[("auth-url", "ignored")]),
        // Needs a companion: ignored without it.
        (
            &[URL, ("auth-signin-redirect-param", "orig")],
            false,
            &[("auth-signin-redirect-param", "ignored")],
        ),
        (
            &[URL, ("auth-cache-duration", "200 5m")],
            false,
            &[("auth-cache-duration", "ignored")],
        ),
        // Invalid: the Ingress fails closed.
        (
            &[("auth-url", "https://invalid..auth.url")],
            true,
            &[("auth-url", "invalid")],
        ),
        (
            &[("auth-url", "ftp://foo.bar/x")],
            true,
            &[("auth-url", "invalid")],
        ),
        (&[("auth-url", "foo.bar/x")], true, &[("auth-url", "invalid")]),
        (&[("auth-url", "http://$foo/x")], true, &[("auth-url", "invalid")]),
        (
            &[("auth-url", "http://foo.bar/<script>")],
            true,
            &[("auth-url", "invalid")],
        ),
        (
            &[("auth-url", "http://user@foo.bar/")],
            true,
            &[("auth-url", "invalid")],
        ),
        (
            &[URL, ("auth-method", "get")],
            true,
            &[("auth-method", "invalid")],
        ),
        (
            &[URL, ("auth-method", "FOO")],
            true,
            &[("auth-method", "invalid")],
        ),
        (
            &[URL, ("auth-signin", "http://$nope/start")],
            true,
            &[("auth-signin", "invalid")],
        ),
        (
            &[URL, ("auth-signin", "javascript:alert(1)")],
            true,
            &[("auth-signin", "invalid")],
        ),
        (
            &[
                URL,
                ("auth-signin", "http://$host/start"),
                ("auth-signin-redirect-param", "a&b"),
            ],
            true,
            &[("auth-signin-redirect-param", "invalid")],
        ),
        (
            &[URL, ("auth-response-headers", "X-User, Bad Header!")],
            true,
            &[("auth-response-headers", "invalid")],
        ),
        (
            &[URL, ("auth-response-headers", "Content-Length")],
            true,
            &[("auth-response-headers", "invalid")],
        ),
        (
            &[URL, ("auth-cache-key", "$request_body")],
            true,
            &[("auth-cache-key", "invalid")],
        ),
        (
            &[URL, ("auth-cache-key", "a b")],
            true,
            &[("auth-cache-key", "invalid")],
        ),
        // ingress-nginx checks the duration with or without a key.
        (
            &[URL, ("auth-cache-duration", "200 soon")],
            true,
            &[("auth-cache-duration", "invalid")],
        ),
        (
            &[URL, ("auth-cache-key", "k"), ("auth-cache-duration", "5m 200")],
            true,
            &[("auth-cache-duration", "invalid")],
        ),
        (
            &[URL, ("auth-keepalive", "many")],
            true,
            &[("auth-keepalive", "invalid")],
        ),
        (
            &[URL, ("auth-always-set-cookie", "yes")],
            true,
            &[("auth-always-set-cookie", "invalid")],
        ),
        (
            &[URL, ("auth-keepalive-share-vars", "maybe")],
            true,
            &[("auth-keepalive-share-vars", "invalid")],
        ),
        (
            &[URL, ("auth-request-redirect", "http://x/<a>")],
            true,
            &[("auth-request-redirect", "invalid")],
        ),
        (
            &[URL, ("auth-proxy-set-headers", "missing")],
            true,
            &[("auth-proxy-set-headers", "invalid")],
        ),
        (
            &[URL, ("auth-proxy-set-headers", "other/headers")],
            true,
            &[("auth-proxy-set-headers", "refused")],
        ),
        (
            &[URL, ("auth-proxy-set-headers", "a/b/c")],
            true,
            &[("auth-proxy-set-headers", "invalid")],
        ),
        // auth-snippet is never run: it fails closed beside a valid auth-url.
        (
            &[URL, ("auth-snippet", "proxy_set_header Foo-Header 42;")],
            true,
            &[("auth-url", "difference"), ("auth-snippet", "refused")],
        ),
    ];
    for (annotations, fails, labels) in cases {
        let a = parse_only(annotations);
        assert_eq!(
            a.fails_closed().is_some(),
            *fails,
            "{annotations:?}: {:#?}",
            a.reports
        );
        for (name, want) in *labels {
            assert_eq!(
                label(&a, name),
                *want,
                "{annotations:?}: {name}: {:?}",
                outcome(&a, name)
            );
        }
        let has_policy = a.policies.external_auth.is_some();
        let url_ok = annotations.iter().any(|(k, v)| *k == "auth-url" && !v.is_empty());
        if !*fails {
            assert_eq!(has_policy, url_ok, "{annotations:?}");
        }
    }
}

#[test]
fn external_auth_values_become_the_typed_policy() {
    use gantry_proxy::policy::ext_auth::CacheRule;
    let a = parse_only(&[
        ("auth-url", "https://auth.example:8443/verify?scope=web"),
        ("auth-method", "POST"),
        ("auth-signin", "https://login.example/start"),
        ("auth-response-headers", "X-User, x-email"),
        ("auth-request-redirect", "https://app.example/home"),
        ("auth-cache-key", "$remote_user$http_authorization"),
        ("auth-cache-duration", "200 202 10m, 401 5m"),
        ("auth-keepalive", "10"),
        ("auth-keepalive-timeout", "30"),
        ("auth-always-set-cookie", "true"),
    ]);
    assert!(a.fails_closed().is_none(), "{:#?}", a.reports);
    let e = a.policies.external_auth.as_deref().unwrap();
    assert!(e.url.https);
    assert_eq!(e.url.authority.as_literal(), Some("auth.example:8443"));
    assert_eq!(e.url.path_and_query.as_literal(), Some("/verify?scope=web"));
    assert_eq!(e.method, Some(http::Method::POST));
    let s = e.signin.as_ref().unwrap();
    assert_eq!(&*s.param, "rd");
    assert_eq!(e.response_headers, ["x-user", "x-email"]);
    assert_eq!(
        e.request_redirect.as_ref().and_then(|t| t.as_literal()),
        Some("https://app.example/home")
    );
    let c = e.cache.as_ref().unwrap();
    assert_eq!(c.key.to_string(), "${remote_user}${http_authorization}");
    assert_eq!(
        c.rules,
        [
            CacheRule {
                statuses: vec![200, 202],
                ttl: Duration::from_secs(600)
            },
            CacheRule {
                statuses: vec![401],
                ttl: Duration::from_secs(300)
            },
        ]
    );
    assert_eq!(e.keepalive.max_idle, 10);
    assert_eq!(e.keepalive.idle_timeout, Duration::from_secs(30));
    assert!(e.always_set_cookie);
    // Defaults: GET, no cache, the default pool, cookies only on 2xx/3xx.
    let d = parse_only(&[("auth-url", "http://auth")]);
    let d = d.policies.external_auth.as_deref().unwrap();
    assert_eq!(
        (d.method.clone(), d.cache.clone(), d.always_set_cookie),
        (None, None, false)
    );
    assert_eq!(d.keepalive, gantry_proxy::policy::Keepalive::default());
    // Negative keep-alive: none kept, as ingress-nginx's 0.
    let n = parse_only(&[("auth-url", "http://auth"), ("auth-keepalive", "-1")]);
    assert_eq!(n.policies.external_auth.as_deref().unwrap().keepalive.max_idle, 0);
}

#[test]
fn auth_proxy_set_headers_come_from_a_config_map_of_the_namespace() {
    let s = store(vec![
        config_map(
            "default",
            "auth-headers",
            &[("My-Custom-Header", "42"), ("X-Client", "$remote_addr")],
        ),
        config_map("default", "bad-name", &[("Bad Header", "1")]),
        config_map("default", "bad-var", &[("X-A", "$request_body")]),
        config_map("default", "framing", &[("Content-Length", "0")]),
    ]);
    let url = ("auth-url", "http://foo.bar/basic-auth/user/password");
    let a = parse_in(&s, &[url, ("auth-proxy-set-headers", "default/auth-headers")]);
    assert_eq!(label(&a, "auth-proxy-set-headers"), "difference");
    let e = a.policies.external_auth.as_deref().unwrap();
    let set: Vec<(String, String)> = e
        .proxy_set_headers
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        set,
        [
            ("my-custom-header".to_string(), "42".to_string()),
            ("x-client".to_string(), "${remote_addr}".to_string())
        ]
    );
    for bad in ["bad-name", "bad-var", "framing"] {
        let a = parse_in(&s, &[url, ("auth-proxy-set-headers", bad)]);
        assert_eq!(label(&a, "auth-proxy-set-headers"), "invalid", "{bad}");
        assert!(a.fails_closed().is_some(), "{bad}");
        assert!(a.policies.external_auth.is_none(), "{bad}");
        let r = a.report("auth-proxy-set-headers").unwrap();
        assert_eq!(r.reference.as_ref().map(|p| p.missing), Some(false), "{bad}");
    }
}

#[test]
fn opentelemetry_annotations_compile_into_the_routes_tracing() {
    use gantry_proxy::trace::RouteTracing;
    assert_eq!(parse_only(&[]).policies.tracing, None);
    let a = parse_only(&[("enable-opentelemetry", "true")]);
    assert_eq!(
        a.policies.tracing,
        Some(RouteTracing {
            enabled: Some(true),
            trust_incoming: true
        })
    );
    assert_eq!(label(&a, "enable-opentelemetry"), "honoured");
    let a = parse_only(&[
        ("enable-opentelemetry", "false"),
        ("opentelemetry-trust-incoming-span", "false"),
        ("opentelemetry-operation-name", "my-op"),
    ]);
    assert_eq!(
        a.policies.tracing,
        Some(RouteTracing {
            enabled: Some(false),
            trust_incoming: false
        })
    );
    assert_eq!(label(&a, "opentelemetry-operation-name"), "ignored");
    // Only the trust annotation: the class decides whether the route is traced.
    let a = parse_only(&[("opentelemetry-trust-incoming-span", "false")]);
    assert_eq!(a.policies.tracing.unwrap().enabled, None);
    let a = parse_only(&[("enable-opentelemetry", "sometimes")]);
    assert_eq!(a.policies.tracing, None);
    assert_eq!(label(&a, "enable-opentelemetry"), "invalid");
}
