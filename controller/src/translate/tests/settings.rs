//! Processor 0: flags, overridden by the ProxyConfig our IngressClass points to.

use std::{sync::Arc, time::Duration};

use gantry_proxy::{
    config::{AccessLogFormat, Hsts, TlsVersion},
    Balancer, ProxyConfig, Snapshot,
};

use super::fixtures::*;
use crate::{
    store::Object,
    translate::{translate, TranslateOptions},
};

/// Our class `gantry`, pointing at ProxyConfig `pc`.
fn class_with(pc: &str) -> IngressClassBuilder {
    ingress_class(CLASS).controller(CONTROLLER).proxy_config(pc)
}

/// Flags that differ from the proxy's built-in defaults, so that "the flag applies" is visible.
fn flag_opts() -> TranslateOptions {
    let config = ProxyConfig {
        upstream_response_timeout: Duration::from_secs(45),
        max_headers: 80,
        ..Default::default()
    };
    TranslateOptions {
        proxy_config: Arc::new(config),
        gateway: None,
        ..opts()
    }
}

fn config_of(objects: Vec<Object>) -> Arc<ProxyConfig> {
    build_with(objects, &flag_opts()).config.clone()
}

#[test]
fn proxy_config_fields_override_the_flags_and_absent_fields_keep_them() {
    let flags = flag_opts().proxy_config;
    type Want = fn(&ProxyConfig) -> ProxyConfig;
    let cases: Vec<(&str, &str, Want)> = vec![
        ("empty spec: the flags", "", |f| f.clone()),
        ("durations in Go syntax", "upstreamResponseTimeout: 1m30s\nheaderReadTimeout: 2.5s\nidleTimeout: 250ms\nupstreamConnectTimeout: 1s", |f| ProxyConfig {
            upstream_response_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_millis(2500),
            idle_timeout: Duration::from_millis(250),
            upstream_connect_timeout: Duration::from_secs(1),
            ..f.clone()
        }),
        ("limits", "maxHeaderBytes: 16384\nmaxHeaders: 50\nhttp2MaxConcurrentStreams: 100", |f| ProxyConfig {
            max_header_bytes: 16384,
            max_headers: 50,
            http2_max_concurrent_streams: 100,
            ..f.clone()
        }),
        ("balancer and TLS", "balancer: LeastRequest\ntlsMinVersion: \"1.3\"", |f| ProxyConfig {
            balancer: Balancer::LeastRequest,
            tls_min_version: TlsVersion::Tls13,
            ..f.clone()
        }),
        ("access log", "accessLog: {enabled: false, format: text}", |f| ProxyConfig {
            access_log: false,
            access_log_format: AccessLogFormat::Text,
            ..f.clone()
        }),
        ("an hsts block turns HSTS on with a year", "hsts: {}", |f| ProxyConfig {
            hsts: Some(Hsts { max_age: Duration::from_secs(31_536_000), include_subdomains: false, preload: false }),
            ..f.clone()
        }),
        ("hsts with every field", "hsts: {maxAge: 1h, includeSubDomains: true, preload: true}", |f| ProxyConfig {
            hsts: Some(Hsts { max_age: Duration::from_secs(3600), include_subdomains: true, preload: true }),
            ..f.clone()
        }),
        ("hsts off", "hsts: {enabled: false, maxAge: 1h}", |f| f.clone()),
    ];
    for (what, spec, want) in cases {
        let config = config_of(objects![class_with("pc"), proxy_config("pc", spec)]);
        assert_eq!(*config, want(&flags), "{what}");
    }
}

#[test]
fn the_class_named_by_the_flag_decides_then_the_default_class_then_the_first_by_name() {
    let ours = |name: &str, pc: &str| ingress_class(name).controller(CONTROLLER).proxy_config(pc);
    let pcs = || {
        objects![
            proxy_config("a", "upstreamResponseTimeout: 1s"),
            proxy_config("b", "upstreamResponseTimeout: 2s"),
            proxy_config("c", "upstreamResponseTimeout: 3s"),
        ]
    };
    // (what, classes, the upstream timeout that applies in seconds, diagnostics)
    type Case<'a> = (&'a str, Vec<Object>, u64, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("only one class", objects![ours("other", "b")], 2, vec![]),
        (
            "the class named by --ingress-class beats the default class",
            objects![ours("aaa", "a").default_class(), ours(CLASS, "c")],
            3,
            vec![("IngressClass aaa", "ParametersIgnored")],
        ),
        (
            "the default class beats one earlier by name",
            objects![ours("aaa", "a"), ours("zzz", "b").default_class()],
            2,
            vec![("IngressClass aaa", "ParametersIgnored")],
        ),
        (
            "else the first by name",
            objects![ours("zzz", "c"), ours("mmm", "b")],
            2,
            vec![("IngressClass zzz", "ParametersIgnored")],
        ),
        (
            "classes pointing at the same ProxyConfig do not conflict",
            objects![ours("aaa", "b"), ours(CLASS, "b")],
            2,
            vec![],
        ),
        (
            "another controller's class is not ours to read",
            objects![ingress_class("nginx")
                .controller("k8s.io/ingress-nginx")
                .proxy_config("a")],
            45,
            vec![],
        ),
        (
            "our class without parameters leaves the choice to the others",
            objects![ingress_class(CLASS).controller(CONTROLLER), ours("zzz", "a")],
            1,
            vec![],
        ),
    ];
    for (what, classes, want_secs, want_diags) in cases {
        let mut objects = pcs();
        objects.extend(classes);
        let snapshot = build_with(objects, &flag_opts());
        assert_eq!(
            snapshot.config.upstream_response_timeout,
            Duration::from_secs(want_secs),
            "{what}"
        );
        let want: Vec<(String, String)> = want_diags
            .iter()
            .map(|(o, r)| (o.to_string(), r.to_string()))
            .collect();
        assert_eq!(reasons(&snapshot), want, "{what}");
    }
    let snapshot = build_with(
        {
            let mut o = pcs();
            o.extend(objects![ours("aaa", "a").default_class(), ours(CLASS, "c")]);
            o
        },
        &flag_opts(),
    );
    let d = the_diagnostic(&snapshot, "ParametersIgnored");
    assert!(
        d.message.contains("ProxyConfig a") && d.message.contains("IngressClass gantry"),
        "names what is ignored and which class decides: {}",
        d.message
    );
}

#[test]
fn a_reference_that_does_not_work_reports_on_the_class_and_the_flags_apply() {
    let cases: Vec<(&str, IngressClassBuilder, &str)> = vec![
        (
            "no such ProxyConfig",
            class_with("missing"),
            "ProxyConfigNotFound",
        ),
        (
            "another API group",
            ingress_class(CLASS).controller(CONTROLLER).parameters(
                Some("example.com"),
                "ProxyConfig",
                "pc",
                None,
                None,
            ),
            "UnsupportedParameters",
        ),
        (
            "another kind",
            ingress_class(CLASS).controller(CONTROLLER).parameters(
                Some("gantry.dev"),
                "ConfigMap",
                "pc",
                None,
                None,
            ),
            "UnsupportedParameters",
        ),
        (
            "namespace scope",
            ingress_class(CLASS).controller(CONTROLLER).parameters(
                Some("gantry.dev"),
                "ProxyConfig",
                "pc",
                Some("Namespace"),
                Some("default"),
            ),
            "UnsupportedParameters",
        ),
    ];
    for (what, class, reason) in cases {
        let snapshot = build_with(
            objects![class, proxy_config("pc", "upstreamResponseTimeout: 1s")],
            &flag_opts(),
        );
        assert_eq!(snapshot.config, flag_opts().proxy_config, "{what}");
        assert_eq!(
            reasons(&snapshot),
            [(format!("IngressClass {CLASS}"), reason.to_string())],
            "{what}"
        );
    }
    // A scope left out means Cluster, as the API does.
    let snapshot = build_with(
        objects![
            ingress_class(CLASS).controller(CONTROLLER).parameters(
                Some("gantry.dev"),
                "ProxyConfig",
                "pc",
                None,
                None
            ),
            proxy_config("pc", "upstreamResponseTimeout: 1s"),
        ],
        &flag_opts(),
    );
    assert_eq!(snapshot.config.upstream_response_timeout, Duration::from_secs(1));
}

#[test]
fn invalid_values_keep_the_last_good_value_of_their_field_and_are_reported() {
    let opts = flag_opts();
    // The snapshot being replaced serves a ProxyConfig applied earlier: 7 s and 2000 headers.
    let previous = Snapshot {
        generation: 4,
        config: Arc::new(ProxyConfig {
            upstream_response_timeout: Duration::from_secs(7),
            max_headers: 2000,
            ..(*opts.proxy_config).clone()
        }),
        ..Default::default()
    };
    // (what, spec, the field reported, what the config must then hold)
    type Case<'a> = (&'a str, &'a str, &'a str, fn(&ProxyConfig) -> bool);
    let cases: Vec<Case<'_>> = vec![
        (
            "zero timeout",
            "upstreamResponseTimeout: 0s",
            "upstreamResponseTimeout",
            |c| c.upstream_response_timeout == Duration::from_secs(7),
        ),
        (
            "not a duration",
            "upstreamResponseTimeout: soon",
            "upstreamResponseTimeout",
            |c| c.upstream_response_timeout == Duration::from_secs(7),
        ),
        ("out of bounds", "maxHeaders: 0", "maxHeaders", |c| {
            c.max_headers == 2000
        }),
        (
            "too small a header buffer",
            "maxHeaderBytes: 100",
            "maxHeaderBytes",
            |c| c.max_header_bytes == 60 * 1024,
        ),
        (
            "a bad field does not hold back the good one next to it",
            "maxHeaders: 999999\nbalancer: LeastRequest",
            "maxHeaders",
            |c| c.max_headers == 2000 && c.balancer == Balancer::LeastRequest,
        ),
    ];
    for (what, spec, field, ok) in cases {
        let store = store(objects![class_with("pc"), proxy_config("pc", spec)]);
        let snapshot = translate(&store, &opts, &previous);
        assert!(ok(&snapshot.config), "{what}: {:#?}", snapshot.config);
        let d = the_diagnostic(&snapshot, "InvalidProxyConfig");
        assert_eq!(d.object, "ProxyConfig pc", "{what}");
        assert!(
            d.message.starts_with(&format!("spec.{field}: ")),
            "{what}: {}",
            d.message
        );
        assert!(d.message.contains("keeping"), "{what}: {}", d.message);
    }

    // Before the first build the last good value is the flag's, not the empty snapshot's default.
    let snapshot = build_with(
        objects![
            class_with("pc"),
            proxy_config("pc", "upstreamResponseTimeout: 0s")
        ],
        &opts,
    );
    assert_eq!(snapshot.config.upstream_response_timeout, Duration::from_secs(45));
    assert_eq!(
        the_diagnostic(&snapshot, "InvalidProxyConfig").message,
        "spec.upstreamResponseTimeout: \"0s\" must be greater than zero; keeping 45s"
    );
}

#[test]
fn a_proxy_config_change_applies_with_the_next_build() {
    let opts = flag_opts();
    let first = translate(
        &store(objects![
            class_with("pc"),
            proxy_config("pc", "upstreamResponseTimeout: 1s")
        ]),
        &opts,
        &Snapshot::default(),
    );
    assert_eq!(first.config.upstream_response_timeout, Duration::from_secs(1));
    let second = translate(
        &store(objects![
            class_with("pc"),
            proxy_config("pc", "upstreamResponseTimeout: 3s")
        ]),
        &opts,
        &first,
    );
    assert_eq!(second.config.upstream_response_timeout, Duration::from_secs(3));
    // The reference removed: back to the flags.
    let third = translate(
        &store(objects![
            ingress_class(CLASS).controller(CONTROLLER),
            proxy_config("pc", "")
        ]),
        &opts,
        &second,
    );
    assert_eq!(third.config, opts.proxy_config);
}

#[test]
fn backend_mode_and_default_certificate_come_from_the_proxy_config() {
    let objects = || {
        objects![
            ingress("web").host("a.example").prefix("/", "svc", 80),
            service("svc").node_port("http", 80, 30080),
            slice("svc").port_name("http").endpoint("10.0.0.1", 80),
            node("n1").internal_ip("192.168.1.1"),
        ]
    };
    let addrs = |s: &crate::translate::Translation| -> Vec<String> {
        let route = s.routes.lookup("a.example", "/").expect("routed");
        route
            .backend
            .endpoints
            .iter()
            .map(|e| e.addr.to_string())
            .collect()
    };
    let mut with = objects();
    with.extend(objects![
        class_with("pc"),
        proxy_config("pc", "backendMode: NodePort")
    ]);
    assert_eq!(addrs(&build(with)), ["192.168.1.1:30080"]);
    assert_eq!(addrs(&build(objects())), ["10.0.0.1:80"], "the flag: endpoints");

    let (named, cert) = tls_secret("default-cert", &["default.example"]);
    let snapshot = build(objects![
        named.ns("ingress"),
        class_with("pc"),
        proxy_config(
            "pc",
            "defaultCertificate: {namespace: ingress, name: default-cert}"
        ),
    ]);
    assert_eq!(leaf(snapshot.certs.default_cert().unwrap()), cert.der);
    assert!(snapshot.diagnostics.is_empty(), "{:#?}", snapshot.diagnostics);
}

#[test]
fn proxy_configs_load_from_manifest_files_and_bad_ones_cost_a_diagnostic() {
    let parsed = crate::manifests::parse_manifests(
        "pc.yaml",
        "apiVersion: gantry.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: good}\nspec: {balancer: LeastRequest}\n---\n\
         apiVersion: gantry.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: bad}\nspec: {balancer: Random}\n",
    )
    .unwrap();
    assert_eq!(
        parsed.objects.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["ProxyConfig good"]
    );
    assert_eq!(parsed.diagnostics.len(), 1);
    assert_eq!(parsed.diagnostics[0].object, "ProxyConfig bad");
}

#[test]
fn tracing_in_the_proxy_config_overrides_the_flags_and_a_bad_ratio_is_reported() {
    let config = config_of(objects![
        class_with("pc"),
        proxy_config(
            "pc",
            "tracing: {enabled: true, samplingRatio: 0.5, parentBased: false}"
        )
    ]);
    assert!(config.tracing.enabled);
    assert_eq!(config.tracing.sampling_per_million, 500_000);
    assert!(!config.tracing.parent_based);

    let flags = flag_opts().proxy_config.tracing;
    let t = build_with(
        objects![
            class_with("pc"),
            proxy_config("pc", "tracing: {samplingRatio: 2}")
        ],
        &flag_opts(),
    );
    assert_eq!(
        t.config.tracing.sampling_per_million, flags.sampling_per_million,
        "out of range: the last good value (the flag's) is kept"
    );
    let d = the_diagnostic(&t, "InvalidProxyConfig");
    assert!(d.message.contains("tracing.samplingRatio"), "{}", d.message);
}
