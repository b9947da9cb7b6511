//! TLS: certificates by host, first one wins, carry-over of the last good certificate, default.

use gantry_proxy::Snapshot;

use super::fixtures::*;
use crate::{
    store::{Object, ObjectKey},
    translate::{translate, TranslateOptions},
};

fn web(hosts: &[&str], secret: &str) -> IngressBuilder {
    ingress("web")
        .tls(hosts, secret)
        .host(hosts[0])
        .prefix("/", "svc", 80)
}

#[test]
fn tls_hosts_get_the_certificate_of_their_secret_exact_and_wildcard() {
    let (exact, exact_cert) = tls_secret("exact", &["a.example"]);
    let (wild, wild_cert) = tls_secret("wild", &["*.wild.example"]);
    let snapshot = build(objects![
        ingress("web")
            .tls(&["A.example"], "exact")
            .tls(&["*.wild.example"], "wild"),
        exact,
        wild,
    ]);
    assert!(snapshot.diagnostics.is_empty(), "{:#?}", snapshot.diagnostics);
    let cases = [
        ("a.example", Some(&exact_cert)),
        ("x.wild.example", Some(&wild_cert)),
        ("x.y.wild.example", None),
        ("b.example", None),
    ];
    for (sni, want) in cases {
        let got = snapshot.certs.lookup(sni).map(leaf);
        assert_eq!(got, want.map(|c| c.der.clone()), "{sni}");
    }
    assert_eq!(snapshot.certs.names(), ["*.wild.example", "a.example"]);
}

#[test]
fn the_oldest_ingress_listing_a_host_gives_its_certificate() {
    let (old, old_cert) = tls_secret("old", &["a.example"]);
    let (new, _) = tls_secret("new", &["a.example"]);
    let snapshot = build(objects![
        ingress("new")
            .created("2024-06-01T00:00:00Z")
            .tls(&["a.example"], "new"),
        ingress("old")
            .created("2024-01-01T00:00:00Z")
            .tls(&["a.example"], "old"),
        old,
        new,
    ]);
    assert_eq!(leaf(snapshot.certs.lookup("a.example").unwrap()), old_cert.der);
}

#[test]
fn secrets_are_read_only_from_the_ingress_namespace() {
    let (secret, _) = tls_secret("cert", &["a.example"]);
    let snapshot = build(objects![web(&["a.example"], "cert").ns("shop"), secret]);
    assert!(snapshot.certs.lookup("a.example").is_none());
    let d = the_diagnostic(&snapshot, "TLSSecretNotFound");
    assert_eq!(d.object, "Ingress shop/web");
    assert!(d.message.contains("shop/cert"), "{}", d.message);
}

/// A snapshot in which `a.example` was served `cert`.
fn previous_with(cert: &TestCert) -> Snapshot {
    let objects = objects![web(&["a.example"], "cert"), secret("cert").cert(cert)];
    translate(&store(objects), &opts(), &Snapshot::default()).snapshot
}

#[test]
fn a_missing_or_broken_secret_keeps_the_hosts_last_good_certificate() {
    let good = test_cert(&["a.example"]);
    let other = test_cert(&["a.example"]);
    let cases: Vec<(&str, Vec<Object>, &str, &str)> = vec![
        (
            "the Secret is deleted",
            objects![],
            "TLSSecretNotFound",
            "not found",
        ),
        (
            "the certificate is not PEM",
            objects![secret("cert")
                .data("tls.crt", b"garbage")
                .data("tls.key", good.key_pem.as_bytes())],
            "TLSSecretInvalid",
            "certificate",
        ),
        (
            "the key belongs to another certificate",
            objects![secret("cert")
                .data("tls.crt", good.cert_pem.as_bytes())
                .data("tls.key", other.key_pem.as_bytes())],
            "TLSSecretInvalid",
            "does not match",
        ),
        (
            "the key is missing",
            objects![secret("cert").data("tls.crt", good.cert_pem.as_bytes())],
            "TLSSecretInvalid",
            "no tls.key",
        ),
        (
            "the Secret is not of type kubernetes.io/tls",
            objects![secret("cert").cert(&good).secret_type("Opaque")],
            "TLSSecretInvalid",
            "type is Opaque",
        ),
    ];
    let previous = previous_with(&good);
    let previous_cert = previous.certs.lookup("a.example").expect("served before");
    for (case, mut objects, reason, detail) in cases {
        objects.push(web(&["a.example"], "cert").into());
        let snapshot = translate(&store(objects.clone()), &opts(), &previous);
        let kept = snapshot.certs.lookup("a.example").expect("carried over");
        assert!(same_cert(kept, previous_cert), "{case}");
        let d = the_diagnostic(&snapshot, reason);
        assert!(d.message.contains(detail), "{case}: {}", d.message);
        assert!(
            d.message.contains("a.example keep(s) the last good certificate"),
            "{case}: {}",
            d.message
        );
        assert!(
            routed(&snapshot, "a.example", "/").is_some(),
            "{case}: routes are unaffected"
        );

        // Without a previous certificate the host falls back to the default certificate.
        let first = translate(&store(objects), &opts(), &Snapshot::default());
        assert!(first.certs.lookup("a.example").is_none(), "{case}");
        assert!(
            the_diagnostic(&first, reason)
                .message
                .contains("get(s) the default certificate"),
            "{case}"
        );
    }
}

#[test]
fn a_good_certificate_from_a_newer_ingress_beats_carrying_over_a_broken_ones() {
    let good = test_cert(&["a.example"]);
    let previous = previous_with(&good);
    let (fresh, fresh_cert) = tls_secret("fresh", &["a.example"]);
    let snapshot = translate(
        &store(objects![
            web(&["a.example"], "cert").created("2024-01-01T00:00:00Z"),
            ingress("newer")
                .created("2024-06-01T00:00:00Z")
                .tls(&["a.example"], "fresh"),
            fresh,
        ]),
        &opts(),
        &previous,
    );
    assert_eq!(leaf(snapshot.certs.lookup("a.example").unwrap()), fresh_cert.der);
    let d = the_diagnostic(&snapshot, "TLSSecretNotFound");
    assert!(
        d.message.contains("another Ingress's certificate"),
        "{}",
        d.message
    );
}

#[test]
fn the_default_certificate_is_the_named_secret_or_else_the_fallback() {
    let (named, named_cert) = tls_secret("default-cert", &["default.example"]);
    let with_default = TranslateOptions {
        default_ssl_certificate: Some(ObjectKey::new("gantry", "default-cert")),
        ..opts()
    };
    let fallback = opts().fallback_certificate;

    let snapshot = build(objects![]);
    assert!(
        same_cert(snapshot.certs.default_cert().unwrap(), &fallback),
        "no flag: the fallback"
    );

    let snapshot = build_with(objects![named.ns("gantry")], &with_default);
    assert_eq!(leaf(snapshot.certs.default_cert().unwrap()), named_cert.der);
    assert!(snapshot.diagnostics.is_empty());

    let cases: Vec<(Vec<Object>, &str)> = vec![
        (objects![], "TLSSecretNotFound"),
        (
            objects![secret("default-cert")
                .ns("gantry")
                .data("tls.crt", b"x")
                .data("tls.key", b"y")],
            "TLSSecretInvalid",
        ),
    ];
    for (objects, reason) in cases {
        let snapshot = build_with(objects, &with_default);
        assert!(
            same_cert(snapshot.certs.default_cert().unwrap(), &fallback),
            "{reason}"
        );
        assert_eq!(
            the_diagnostic(&snapshot, reason).object,
            "Secret gantry/default-cert"
        );
    }
}

#[test]
fn invalid_tls_hosts_are_reported_and_skipped() {
    let (secret, _) = tls_secret("cert", &["a.example"]);
    let snapshot = build(objects![
        ingress("web").tls(&["a.example", "a.example:443", "*"], "cert"),
        secret
    ]);
    assert_eq!(snapshot.certs.names(), ["a.example"]);
    let invalid: Vec<_> = snapshot
        .diagnostics
        .iter()
        .filter(|d| d.reason == "InvalidHost")
        .collect();
    assert_eq!(invalid.len(), 2, "{:#?}", snapshot.diagnostics);
}
