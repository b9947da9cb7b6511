//! A build that reuses the last one's certificates, backends and annotations
//! ([`translate_cached`]) gives exactly what a build from nothing ([`translate`]) gives, over
//! random sequences of changes: Ingresses (hosts, paths, backends, TLS, annotations that read
//! Secrets, node-port mode) and every object they read coming, changing and going.

use gantry_proxy::{PathMatch, Snapshot};

use super::fixtures::*;
use crate::{
    store::{Kind, Object, ObjectKey, ObjectStore},
    translate::{translate, translate_cached, TranslateCache, Translation},
};

const HOSTS: [&str; 4] = ["a.example", "b.example", "c.example", "*.wild.example"];
const SERVICES: [&str; 3] = ["s0", "s1", "s2"];

/// Random objects from a small universe, so that changes hit the same names again and again.
struct Universe {
    rng: fastrand::Rng,
    certs: Vec<TestCert>,
    /// Only what a build may patch in: changes to Ingresses, Services and EndpointSlices, and no
    /// annotation whose effect reaches across Ingresses.
    patchable: bool,
}

impl Universe {
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.rng.usize(..of.len())]
    }

    fn ingress(&mut self) -> Object {
        let name = format!("i{}", self.rng.usize(..6));
        let host = self.pick(&HOSTS);
        let mut b = ingress(&name)
            .created(&format!("2026-01-01T00:00:{:02}Z", self.rng.usize(..6)))
            .host(host);
        for _ in 0..self.rng.usize(1..3) {
            let path = format!("/p{}", self.rng.usize(..3));
            let service = self.pick(&SERVICES);
            b = if self.rng.bool() {
                b.prefix(&path, service, 80)
            } else {
                b.exact(&path, service, "http")
            };
        }
        if self.rng.bool() {
            b = b.tls(&[host], &format!("tls{}", self.rng.usize(..3)));
        }
        let n = self.rng.usize(..2);
        let annotations = if self.patchable {
            // Backend mode, regex mode, a rewrite that may not fit (reported), an annotation
            // value that is wrong (reported).
            [1, 2, 5, 9, 10, 10, 10][self.rng.usize(..7)]
        } else {
            self.rng.usize(..12)
        };
        match annotations {
            0 => {
                b = b
                    .annotation("nginx.ingress.kubernetes.io/auth-type", "basic")
                    .annotation(
                        "nginx.ingress.kubernetes.io/auth-secret",
                        &format!("auth{}", self.rng.usize(..2)),
                    )
            }
            1 => b = b.annotation("gantry.dev/backend-mode", "node-port"),
            2 => b = b.annotation("nginx.ingress.kubernetes.io/use-regex", "true"),
            // The annotations whose effects reach across Ingresses and hosts.
            3 => {
                b = b
                    .annotation("nginx.ingress.kubernetes.io/canary", "true")
                    .annotation("nginx.ingress.kubernetes.io/canary-weight", "30")
            }
            4 => {
                b = b.annotation(
                    "nginx.ingress.kubernetes.io/server-alias",
                    &format!("alias{n}.example"),
                )
            }
            // `/$2` does not fit paths without capture groups: they answer 503, and the
            // annotation's report says so per path.
            5 => b = b.annotation("nginx.ingress.kubernetes.io/rewrite-target", ["/$2", "/x"][n]),
            6 => b = b.annotation("nginx.ingress.kubernetes.io/default-backend", SERVICES[n]),
            7 => b = b.annotation("nginx.ingress.kubernetes.io/from-to-www-redirect", "true"),
            // A missing CA Secret: the whole host fails closed.
            8 => b = b.annotation("nginx.ingress.kubernetes.io/auth-tls-secret", "default/ca0"),
            9 => b = b.annotation("nginx.ingress.kubernetes.io/ssl-redirect", "maybe"),
            _ => {}
        }
        if self.rng.usize(..8) == 0 {
            b = b.class("someone-else");
        }
        b.into()
    }

    fn service(&mut self) -> Object {
        let name = self.pick(&SERVICES);
        let port = if self.rng.usize(..6) == 0 { 81 } else { 80 };
        service(name)
            .node_port("http", port, 30000 + self.rng.i32(0..3))
            .into()
    }

    fn slice(&mut self) -> Object {
        let service = self.pick(&SERVICES);
        // Now and then a slice whose name is not its Service's: the same slice then moves from one
        // Service to another (relabelled), and both Services' backends must follow.
        let owner = if self.rng.usize(..4) == 0 {
            "shared"
        } else {
            service
        };
        let mut b = slice(service)
            .named(&format!("{owner}-{}", self.rng.usize(..2)))
            .port_name("http");
        for _ in 0..self.rng.usize(..3) {
            let address = format!("10.0.0.{}", self.rng.usize(1..5));
            b = if self.rng.usize(..4) == 0 {
                b.not_ready(&address, 8080)
            } else {
                b.endpoint(&address, 8080)
            };
        }
        b.into()
    }

    fn secret(&mut self) -> Object {
        if self.rng.bool() {
            let name = format!("tls{}", self.rng.usize(..3));
            let cert = &self.certs[self.rng.usize(..self.certs.len())];
            return match self.rng.usize(..5) {
                0 => secret(&name).data("tls.crt", b"not a certificate").into(),
                _ => secret(&name).cert(cert).into(),
            };
        }
        let name = format!("auth{}", self.rng.usize(..2));
        let htpasswd: &[u8] = match self.rng.usize(..3) {
            // `htpasswd -nbs user secret`
            0 => b"user:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n",
            1 => b"user:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nother:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n",
            _ => b"no colon here\n",
        };
        secret(&name).secret_type("Opaque").data("auth", htpasswd).into()
    }

    fn node(&mut self) -> Object {
        let name = format!("n{}", self.rng.usize(..2));
        node(&name)
            .internal_ip(&format!("192.168.0.{}", self.rng.usize(1..4)))
            .ready(if self.rng.usize(..4) == 0 { "False" } else { "True" })
            .into()
    }

    /// One change: an object of some kind comes or changes, or one that may be there goes.
    fn change(&mut self, store: &mut ObjectStore) {
        let kinds = if self.patchable { 3 } else { 5 };
        let object = match self.rng.usize(..kinds) {
            0 => self.ingress(),
            1 => self.service(),
            2 => self.slice(),
            3 => self.secret(),
            _ => self.node(),
        };
        if self.rng.usize(..5) == 0 {
            store.delete(object.kind(), &object.key());
        } else {
            store.apply(object);
        }
    }
}

/// The two translations, compared on everything they hand out.
fn assert_same(cached: &Translation, full: &Translation, step: usize, seed: u64) {
    let context = format!("seed {seed}, step {step}");
    assert!(cached.snapshot == full.snapshot, "{context}: snapshots differ");
    assert_eq!(cached.diagnostics, full.diagnostics, "{context}");
    assert_eq!(cached.annotations, full.annotations, "{context}");
    assert_eq!(cached.gateway, full.gateway, "{context}");
}

#[test]
fn a_cached_build_equals_a_full_build_over_random_changes() {
    let certs = vec![
        test_cert(&["a.example", "b.example"]),
        test_cert(&["c.example"]),
        test_cert(&["*.example"]),
    ];
    let opts = opts();
    let (mut hits, mut misses) = (0, 0);
    for seed in 0..40 {
        let mut u = Universe {
            rng: fastrand::Rng::with_seed(seed),
            certs: certs.clone(),
            patchable: false,
        };
        let mut store = ObjectStore::new();
        store.apply(ingress_class(CLASS).into());
        let mut cache = TranslateCache::default();
        let mut previous = Snapshot::default();
        for step in 0..60 {
            for _ in 0..u.rng.usize(1..4) {
                u.change(&mut store);
            }
            let cached = translate_cached(&store, &opts, &previous, &mut cache);
            let full = translate(&store, &opts, &previous);
            assert_same(&cached, &full, step, seed);
            hits += cached.cache.hits;
            misses += cached.cache.misses;
            previous = cached.snapshot;
        }
    }
    // Positive control: the cache was used, and was also missed (changes do invalidate it).
    assert!(hits > 1000 && misses > 1000, "hits {hits}, misses {misses}");
}

/// The same over changes a build may patch in ([`crate::translate`]'s `patch`): Ingresses,
/// Services and EndpointSlices changing, coming and going, with Ingresses whose annotations are
/// reported now and then (those changes make whole builds).
#[test]
fn a_patched_build_equals_a_full_build_over_random_ingress_and_endpoint_changes() {
    let certs = vec![test_cert(&["a.example", "b.example"]), test_cert(&["c.example"])];
    let opts = opts();
    let (mut builds, mut patched) = (0, 0);
    for seed in 0..60 {
        let mut u = Universe {
            rng: fastrand::Rng::with_seed(1000 + seed),
            certs: certs.clone(),
            patchable: true,
        };
        let mut store = ObjectStore::new();
        store.apply(ingress_class(CLASS).into());
        for i in 0..3 {
            store.apply(secret(&format!("tls{i}")).cert(&certs[i % 2]).into());
        }
        let mut cache = TranslateCache::default();
        let mut previous = Snapshot::default();
        for step in 0..60 {
            for _ in 0..u.rng.usize(1..3) {
                u.change(&mut store);
            }
            let cached = translate_cached(&store, &opts, &previous, &mut cache);
            let full = translate(&store, &opts, &previous);
            assert_same(&cached, &full, step, seed);
            builds += 1;
            patched += usize::from(cached.cache.patched);
            previous = cached.snapshot;
        }
    }
    // Positive control: many of these builds were patches, and not all (in this small universe
    // Ingresses often conflict on a host, miss a Service, change their `spec.tls` or have a
    // reported annotation, and those changes make whole builds).
    assert!(
        patched * 5 > builds && patched < builds,
        "{patched} of {builds} patched"
    );
}

#[test]
fn an_endpoint_change_rebuilds_only_that_backend_and_a_secret_change_only_its_certificate() {
    let cert = test_cert(&["a.example"]);
    let mut store = ObjectStore::new();
    for o in objects![
        ingress_class(CLASS),
        ingress("web")
            .host("a.example")
            .prefix("/", "s0", 80)
            .prefix("/b", "s1", 80)
            .tls(&["a.example"], "tls0"),
        ingress("other").host("c.example").prefix("/", "s2", 80),
        service("s0").port("http", 80, 8080),
        service("s1").port("http", 80, 8080),
        service("s2").port("http", 80, 8080),
        slice("s0").port_name("http").endpoint("10.0.0.1", 8080),
        slice("s1").port_name("http").endpoint("10.0.0.2", 8080),
        slice("s2").port_name("http").endpoint("10.0.0.3", 8080),
        secret("tls0").cert(&cert),
    ] {
        store.apply(o);
    }
    let opts = opts();
    let mut cache = TranslateCache::default();
    let first = translate_cached(&store, &opts, &Snapshot::default(), &mut cache);
    assert_eq!(first.cache.hits, 0);
    // Three backends, one certificate, per Ingress (2) its facts (with its annotations), per host
    // (2) its routes.
    assert_eq!(first.cache.misses, 8, "{:?}", first.cache);
    let route =
        |t: &Translation, host: &str, path: &str| t.routes.lookup(host, path).cloned().expect("routed");

    store.apply(slice("s0").port_name("http").endpoint("10.0.0.9", 8080).into());
    let second = translate_cached(&store, &opts, &first.snapshot, &mut cache);
    // A patch of the last build: the store says the change touched s0 alone, whose backend is
    // used by a.example only. Made anew: the backend of s0 and the routes of a.example. Looked up
    // and reused: s1, for the host made anew. Not looked at: both Ingresses' facts, the other
    // host and its backend (s2), the certificates.
    assert!(second.cache.patched);
    assert_eq!(
        (second.cache.hits, second.cache.misses),
        (1, 2),
        "{:?}",
        second.cache
    );
    assert!(
        std::sync::Arc::ptr_eq(
            &route(&first, "c.example", "/"),
            &route(&second, "c.example", "/")
        ),
        "the other host's routes are the last build's"
    );
    let b = |t: &Translation, path: &str| {
        t.routes
            .lookup("a.example", path)
            .map(|r| r.backend.clone())
            .expect("routed")
    };
    assert_eq!(b(&second, "/").endpoints[0].addr.to_string(), "10.0.0.9:8080");
    assert!(
        std::sync::Arc::ptr_eq(&b(&first, "/b"), &b(&second, "/b")),
        "the untouched backend is the same Arc"
    );

    // A status-like no-op (the same object again) keeps every entry, and looks nothing up: nothing
    // changed since the last build, which it patches.
    store.apply(secret("tls0").cert(&cert).into());
    let third = translate_cached(&store, &opts, &second.snapshot, &mut cache);
    assert_eq!(
        (third.cache.hits, third.cache.misses, third.cache.entries),
        (0, 0, 8),
        "{:?}",
        third.cache
    );

    // A changed Ingress: its facts (its annotations read again) and its host's routes are made
    // anew; the other host's routes and every backend are reused.
    store.apply(
        ingress("web")
            .host("a.example")
            .prefix("/", "s0", 80)
            .prefix("/b", "s1", 80)
            .prefix("/new", "s1", 80)
            .tls(&["a.example"], "tls0")
            .into(),
    );
    let fourth = translate_cached(&store, &opts, &third.snapshot, &mut cache);
    // A patch: made anew, its facts and its host's routes; looked up and reused, the two backends
    // of the host made anew. Its `spec.tls` is as it was: the certificates by name are the last
    // build's. The other Ingress and its host are not looked at.
    assert!(fourth.cache.patched);
    assert_eq!(
        (fourth.cache.hits, fourth.cache.misses),
        (2, 2),
        "{:?}",
        fourth.cache
    );
    assert_eq!(
        route(&fourth, "a.example", "/new/x").path,
        PathMatch::Prefix("/new".into())
    );
    assert!(std::sync::Arc::ptr_eq(
        &route(&third, "c.example", "/"),
        &route(&fourth, "c.example", "/")
    ));
    assert!(store
        .revision(Kind::Secret, &ObjectKey::new("default", "tls0"))
        .is_some());
}

/// A build that looks only at the backends of the Services an endpoint change touched keeps the
/// others' entries without looking at them, and so also the entry of a Service that no route
/// used then: when a route comes back to it, it is made anew from the Service as it is now.
#[test]
fn a_backend_no_route_used_while_its_service_changed_is_made_anew() {
    let mut store = ObjectStore::new();
    let a = || ingress("a").host("a.example").prefix("/", "s0", 80);
    for o in objects![
        ingress_class(CLASS),
        a(),
        ingress("c").host("c.example").prefix("/", "s2", 80),
        service("s0").port("http", 80, 8080),
        service("s2").port("http", 80, 8080),
        slice("s0").port_name("http").endpoint("10.0.0.1", 8080),
        slice("s2").port_name("http").endpoint("10.0.0.3", 8080),
    ] {
        store.apply(o);
    }
    let opts = opts();
    let mut cache = TranslateCache::default();
    let mut last = translate_cached(&store, &opts, &Snapshot::default(), &mut cache);
    let endpoint = |t: &Translation| {
        t.routes.lookup("a.example", "/").map(|r| {
            r.backend
                .endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect::<Vec<_>>()
        })
    };
    // The route to s0 goes; then s0's endpoints change while no route uses it; then the route
    // comes back.
    let steps: [&dyn Fn(&mut ObjectStore); 3] = [
        &|s| {
            s.delete(Kind::Ingress, &ObjectKey::new("default", "a"));
        },
        &|s| {
            s.apply(slice("s0").port_name("http").endpoint("10.0.0.9", 8080).into());
        },
        &|s| {
            s.apply(a().into());
        },
    ];
    for (step, change) in steps.iter().enumerate() {
        change(&mut store);
        let cached = translate_cached(&store, &opts, &last.snapshot, &mut cache);
        let full = translate(&store, &opts, &last.snapshot);
        assert_same(&cached, &full, step, 0);
        last = cached;
    }
    assert_eq!(endpoint(&last), Some(vec!["10.0.0.9:8080".to_string()]));
}
