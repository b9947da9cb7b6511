//! Heap bytes per object in Gantry's object store, by kind, and of the translated snapshot per
//! Ingress.
//!
//! Builds N objects of each kind the way the API server returns them (uid, resourceVersion,
//! creationTimestamp, a managedFields entry, the labels and annotations that kubectl, Helm and
//! cert-manager leave), encodes each to JSON and decodes it again as the watcher does, slims it
//! with the watcher's own [`slim`] and stores it with [`ObjectStore::apply`]. The live heap bytes
//! are counted by `stats_alloc` wrapped around the system allocator (an allocator wrapper needs
//! `unsafe impl GlobalAlloc`, which Gantry's crates forbid; the crate keeps that out of this
//! repository). For each kind it reports:
//!
//! - *as received*: the decoded objects held in a `Vec` (what a cache of whole objects, as
//!   kube-runtime's reflector keeps, would hold);
//! - *stored*: what the store grew by, per object: the slimmed object, its key and the map's node
//!   (and, for EndpointSlices, the by-Service index);
//! - *struct*: `size_of` the type the store keeps, the part of *stored* that every object takes
//!   whatever it holds: k8s-openapi's for Ingresses and Secrets (every absent optional field
//!   still takes its 24 bytes; boxed, so the map's node holds a pointer), Gantry's own for
//!   Services and EndpointSlices (`store::KeptService`, `KeptSlice`: what translation reads,
//!   inline in the map's node).
//!
//! Last, it changes one Ingress at a time and times the rebuild from nothing and reusing the last
//! build ([`translate_cached`]), checking that the two agree.
//!
//! Then it translates the whole store (N Ingresses, each with one host, two paths and a TLS
//! Secret) and reports the live size of the translation (routes, backends with their endpoints,
//! parsed certificates, diagnostics) per Ingress.
//!
//! The objects: an Ingress with one host, two `Prefix` paths and a `spec.tls` entry; a ClusterIP
//! Service with one port; an EndpointSlice with two ready endpoints (pod references, node, zone);
//! a `kubernetes.io/tls` Secret whose `tls.crt` is an RSA-2048 leaf plus an RSA-2048 intermediate
//! (as Let's Encrypt serves them) and `tls.key` the leaf's RSA-2048 PKCS#8 key, made by `openssl`
//! (a P-256 pair from rcgen when `openssl` is missing, which the output says).
//!
//! Run: `cargo run --release -p gantry --example store_memory` (`STORE_MEMORY_N`, default 10000).
//! Prints a table and writes `bench/store_memory.json` under the target folder (`CARGO_TARGET_DIR`,
//! else the workspace's `target/`).

use std::{alloc::System, collections::BTreeMap, path::PathBuf, process::Command, time::Instant};

use gantry::{
    sources::kube::slim,
    store::{KeptService, KeptSlice, Object, ObjectStore},
    translate::{translate, translate_cached, BackendMode, TranslateCache, TranslateOptions},
};
use gantry_proxy::{Snapshot, TlsCert};
use k8s_openapi::{
    api::{
        core::v1::{ObjectReference, Secret, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
            IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressRule, IngressServiceBackend,
            IngressSpec, IngressStatus, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time},
        util::intstr::IntOrString,
    },
    ByteString,
};
use serde::{de::DeserializeOwned, Serialize};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed since `region` started. (`stats_alloc` already counts what a
/// `realloc` grows in `bytes_allocated` and what it shrinks in `bytes_deallocated`;
/// `bytes_reallocated` is the same again, net, and adding it counted every realloc twice: lists
/// that grew while decoding made objects look larger, shrinking ones smaller.)
fn live(region: &Region<'_, System>) -> i64 {
    let s = region.change();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

const CLASS: &str = "gantry";

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600).unwrap_or_default())
}

// These builders stay here rather than in gantry-testkit's `objects`: they make objects as the API
// server returns them (uid, resourceVersion, Helm labels and annotations, managedFields), because
// their size is what this example measures; the kit's builders make the minimal objects tests need.

/// Metadata as the API server returns it for object `i` of a kind.
fn meta(i: usize, name: String, manager: &str, fields: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(format!("team-{:02}", i % 50)),
        uid: Some(format!("{:08x}-4b1e-4c2a-9d3f-{:012x}", i, i * 7919)),
        resource_version: Some(format!("{}", 1_000_000 + i)),
        generation: Some(1),
        creation_timestamp: Some(now()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".into(), name.clone()),
            ("app.kubernetes.io/instance".into(), format!("{name}-prod")),
            ("app.kubernetes.io/managed-by".into(), "Helm".into()),
            ("helm.sh/chart".into(), "web-1.4.2".into()),
        ])),
        annotations: Some(BTreeMap::from([
            ("meta.helm.sh/release-name".into(), format!("{name}-prod")),
            (
                "meta.helm.sh/release-namespace".into(),
                format!("team-{:02}", i % 50),
            ),
        ])),
        managed_fields: Some(vec![ManagedFieldsEntry {
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(
                serde_json::from_str(fields).unwrap_or(serde_json::Value::Null),
            )),
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            time: Some(now()),
            ..ManagedFieldsEntry::default()
        }]),
        ..ObjectMeta::default()
    }
}

const META_FIELDS: &str = r#"{"f:metadata":{"f:annotations":{".":{},"f:meta.helm.sh/release-name":{},"f:meta.helm.sh/release-namespace":{}},"f:labels":{".":{},"f:app.kubernetes.io/instance":{},"f:app.kubernetes.io/managed-by":{},"f:app.kubernetes.io/name":{},"f:helm.sh/chart":{}}}"#;

fn ingress(i: usize) -> Ingress {
    let name = format!("web-{i:05}");
    // Covered by the shared certificate's `*.example.com`.
    let host = format!("{name}.example.com");
    let path = |p: &str, svc: &str, port: ServiceBackendPort| HTTPIngressPath {
        path: Some(p.into()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: svc.into(),
                port: Some(port),
            }),
            ..IngressBackend::default()
        },
    };
    let fields = format!(
        r#"{},"f:spec":{{"f:ingressClassName":{{}},"f:rules":{{}},"f:tls":{{}}}}}}"#,
        META_FIELDS.trim_end_matches('}')
    );
    Ingress {
        metadata: meta(i, name.clone(), "helm", &fields),
        spec: Some(IngressSpec {
            ingress_class_name: Some(CLASS.into()),
            rules: Some(vec![IngressRule {
                host: Some(host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![
                        path(
                            "/",
                            &name,
                            ServiceBackendPort {
                                name: Some("http".into()),
                                number: None,
                            },
                        ),
                        path(
                            "/api",
                            &name,
                            ServiceBackendPort {
                                name: None,
                                number: Some(80),
                            },
                        ),
                    ],
                }),
            }]),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![host]),
                secret_name: Some(format!("{name}-tls")),
            }]),
            ..IngressSpec::default()
        }),
        status: Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(vec![IngressLoadBalancerIngress {
                    ip: Some("203.0.113.10".into()),
                    ..IngressLoadBalancerIngress::default()
                }]),
            }),
        }),
    }
}

fn service(i: usize) -> Service {
    let name = format!("web-{i:05}");
    let ip = format!("10.96.{}.{}", (i / 250) % 250, i % 250 + 1);
    Service {
        metadata: meta(i, name.clone(), "helm", META_FIELDS),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ip_families: Some(vec!["IPv4".into()]),
            ip_family_policy: Some("SingleStack".into()),
            internal_traffic_policy: Some("Cluster".into()),
            session_affinity: Some("None".into()),
            selector: Some(BTreeMap::from([("app.kubernetes.io/name".into(), name)])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(8080)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: Some(Default::default()),
    }
}

fn endpoint_slice(i: usize) -> EndpointSlice {
    let service = format!("web-{i:05}");
    let mut m = meta(
        i,
        format!("{service}-x7k2p"),
        "kube-controller-manager",
        META_FIELDS,
    );
    m.generate_name = Some(format!("{service}-"));
    m.labels = Some(BTreeMap::from([
        ("kubernetes.io/service-name".into(), service.clone()),
        (
            "endpointslice.kubernetes.io/managed-by".into(),
            "endpointslice-controller.k8s.io".into(),
        ),
        ("app.kubernetes.io/name".into(), service.clone()),
    ]));
    m.annotations = Some(BTreeMap::from([(
        "endpoints.kubernetes.io/last-change-trigger-time".into(),
        "2026-01-01T00:00:00Z".into(),
    )]));
    m.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.clone(),
        uid: format!("{:08x}-4b1e-4c2a-9d3f-{:012x}", i, i * 7919),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let endpoint = |n: usize| Endpoint {
        addresses: vec![format!(
            "10.244.{}.{}",
            (2 * i + n) / 250 % 250,
            (2 * i + n) % 250 + 1
        )],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: Some(format!("node-{:03}", (i + n) % 100)),
        zone: Some(format!("eu-west-1{}", ["a", "b", "c"][(i + n) % 3])),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(format!("{service}-7d9f8c6b5-{n}q2wz")),
            namespace: m.namespace.clone(),
            uid: Some(format!("{:08x}-1111-4c2a-9d3f-{:012x}", i, n)),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    };
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: vec![endpoint(0), endpoint(1)],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        metadata: m,
    }
}

fn secret(i: usize, pem: &Pem) -> Secret {
    let name = format!("web-{i:05}-tls");
    let mut m = meta(i, name.clone(), "cert-manager-certificates-issuing", META_FIELDS);
    m.labels = Some(BTreeMap::from([(
        "controller.cert-manager.io/fao".into(),
        "true".into(),
    )]));
    m.annotations = Some(BTreeMap::from([
        (
            "cert-manager.io/alt-names".into(),
            format!("web-{i:05}.example.com"),
        ),
        ("cert-manager.io/certificate-name".into(), name),
        (
            "cert-manager.io/common-name".into(),
            format!("web-{i:05}.example.com"),
        ),
        ("cert-manager.io/issuer-group".into(), "cert-manager.io".into()),
        ("cert-manager.io/issuer-kind".into(), "ClusterIssuer".into()),
        ("cert-manager.io/issuer-name".into(), "letsencrypt-prod".into()),
    ]));
    Secret {
        metadata: m,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".into(), ByteString(pem.chain.clone())),
            ("tls.key".into(), ByteString(pem.key.clone())),
        ])),
        ..Secret::default()
    }
}

/// One certificate chain and key, shared by every Secret (each Secret holds its own copy).
struct Pem {
    chain: Vec<u8>,
    key: Vec<u8>,
    what: &'static str,
}

/// An RSA-2048 leaf signed by an RSA-2048 intermediate, made by `openssl`; a P-256 pair from rcgen
/// when `openssl` cannot be run.
fn make_pem() -> Pem {
    let dir = std::env::temp_dir().join(format!("gantry-store-memory-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // Arguments split on spaces (none of them contains one).
    let run = |args: &str| {
        Command::new("openssl")
            .args(args.split(' '))
            .current_dir(&dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // A leaf as a public CA issues it: X.509 v3 with these extensions (webpki refuses v1).
    let ext = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
               extendedKeyUsage=serverAuth\nsubjectAltName=DNS:*.example.com,DNS:example.com\n\
               subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    let ok = std::fs::write(dir.join("leaf.ext"), ext).is_ok()
        && run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 90 -subj /O=Example/CN=Intermediate")
        && run("req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=*.example.com")
        && run("x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 90 -extfile leaf.ext");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_default();
    let pem = if ok {
        let mut chain = read("tls.crt");
        chain.extend(read("ca.crt"));
        Pem {
            chain,
            key: read("tls.key"),
            what: "RSA-2048 leaf + RSA-2048 intermediate (openssl)",
        }
    } else {
        let c =
            rcgen::generate_simple_self_signed(vec!["*.example.com".to_string()]).expect("rcgen certificate");
        Pem {
            chain: c.cert.pem().into_bytes(),
            key: c.signing_key.serialize_pem().into_bytes(),
            what: "P-256 self-signed (rcgen; openssl was not found)",
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    pem
}

/// One kind's figures, in bytes per object.
#[derive(Serialize)]
struct Row {
    kind: &'static str,
    objects: usize,
    json_bytes: f64,
    /// `size_of` the Rust type: the part of each object it takes whatever it holds.
    struct_bytes: usize,
    as_received: f64,
    stored: f64,
}

/// Encodes each object to JSON, decodes it as the watcher would, and measures the decoded objects
/// held whole and then slimmed into `store`.
fn measure<K>(kind: &'static str, objects: Vec<K>, struct_bytes: usize, store: &mut ObjectStore) -> Row
where
    K: Serialize + DeserializeOwned,
    Object: From<K>,
{
    let n = objects.len();
    let json: Vec<Vec<u8>> = objects
        .iter()
        .map(|o| serde_json::to_vec(o).expect("encode"))
        .collect();
    drop(objects);
    let json_bytes = json.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let decode = |bytes: &Vec<u8>| serde_json::from_slice::<K>(bytes).expect("decode");

    let region = Region::new(GLOBAL);
    let whole: Vec<K> = json.iter().map(decode).collect();
    let as_received = live(&region) as f64 / n as f64;
    drop(whole);

    let region = Region::new(GLOBAL);
    for bytes in &json {
        store.apply(slim(Object::from(decode(bytes))));
    }
    let stored = live(&region) as f64 / n as f64;
    Row {
        kind,
        objects: n,
        json_bytes,
        struct_bytes,
        as_received,
        stored,
    }
}

/// Median wall time of a rebuild after one Ingress changed.
struct RebuildTimes {
    runs: usize,
    full_ms: f64,
    cached_ms: f64,
}

/// Changes one Ingress at a time (an annotation added) and times the rebuild twice: from nothing
/// ([`translate`]) and reusing the last build ([`translate_cached`]); the two must agree.
fn rebuild_times(store: &mut ObjectStore, opts: &TranslateOptions, n: usize) -> RebuildTimes {
    // `STORE_MEMORY_CACHED_ONLY=1`: only the cached rebuilds, 100 of them (for a profiler).
    let cached_only = std::env::var_os("STORE_MEMORY_CACHED_ONLY").is_some();
    let runs = if cached_only { 100 } else { 9 };
    let mut cache = TranslateCache::default();
    let mut previous = translate_cached(store, opts, &Snapshot::default(), &mut cache).snapshot;
    let (mut full, mut cached) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let mut changed = ingress(i % n.max(1));
        changed.metadata.annotations.get_or_insert_default().insert(
            "nginx.ingress.kubernetes.io/ssl-redirect".into(),
            format!("{}", i % 2 == 0),
        );
        store.apply(Object::from(changed));
        let started = Instant::now();
        let incremental = translate_cached(store, opts, &previous, &mut cache);
        cached.push(started.elapsed().as_secs_f64() * 1000.0);
        if !cached_only {
            let started = Instant::now();
            let whole = translate(store, opts, &previous);
            full.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(
                whole.snapshot == incremental.snapshot && whole.diagnostics == incremental.diagnostics,
                "a cached build must equal a full one"
            );
        }
        previous = incremental.snapshot;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    RebuildTimes {
        runs,
        full_ms: median(&mut full),
        cached_ms: median(&mut cached),
    }
}

fn main() {
    let n: usize = std::env::var("STORE_MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let pem = make_pem();
    let mut store = ObjectStore::new();
    store.apply(Object::from(IngressClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some("gantry.dev/ingress-controller".into()),
            ..IngressClassSpec::default()
        }),
    }));
    let rows = vec![
        measure(
            "Ingress",
            (0..n).map(ingress).collect(),
            size_of::<Ingress>(),
            &mut store,
        ),
        measure(
            "Service",
            (0..n).map(service).collect(),
            size_of::<KeptService>(),
            &mut store,
        ),
        measure(
            "EndpointSlice",
            (0..n).map(endpoint_slice).collect(),
            size_of::<KeptSlice>(),
            &mut store,
        ),
        measure(
            "Secret",
            (0..n).map(|i| secret(i, &pem)).collect(),
            size_of::<Secret>(),
            &mut store,
        ),
    ];

    let opts = TranslateOptions {
        ingress_class: CLASS.into(),
        controller_name: "gantry.dev/ingress-controller".into(),
        backend_mode: BackendMode::Endpoints,
        default_ssl_certificate: None,
        fallback_certificate: TlsCert::self_signed(&["gantry.invalid"]).expect("fallback certificate"),
        proxy_config: Default::default(),
        gateway: None,
    };
    let previous = Snapshot::default();
    let region = Region::new(GLOBAL);
    let translation = translate(&store, &opts, &previous);
    let snapshot_bytes = live(&region) as f64 / n as f64;
    let routes = translation.snapshot.routes.len();
    let diagnostics = translation.diagnostics.len();
    if let Some(d) = translation.diagnostics.first() {
        eprintln!(
            "first diagnostic (the objects should translate cleanly): {} {}",
            d.object, d.message
        );
    }
    drop(translation);
    // What a running controller keeps besides the snapshot: the translation cache (memos and the
    // prior a patch starts from), measured as what stays after the snapshot it built is dropped.
    let region = Region::new(GLOBAL);
    let mut cache = TranslateCache::default();
    let cached = translate_cached(&store, &opts, &previous, &mut cache);
    let cached_total = live(&region) as f64 / n as f64;
    drop(cached);
    let cache_bytes = live(&region) as f64 / n as f64;
    drop(cache);
    let rebuilds = rebuild_times(&mut store, &opts, n);

    println!("{n} objects of each kind; TLS Secrets: {}", pem.what);
    println!(
        "tls.crt {} bytes, tls.key {} bytes (PEM)\n",
        pem.chain.len(),
        pem.key.len()
    );
    println!("| kind | JSON from the API server | decoded, whole | stored by Gantry (slimmed) | of which the struct |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} B | {:.0} B | {:.0} B | {} B |",
            r.kind, r.json_bytes, r.as_received, r.stored, r.struct_bytes
        );
    }
    let total: f64 = rows.iter().map(|r| r.stored).sum();
    println!(
        "\nstore per Ingress with its Service, EndpointSlice and Secret: {total:.0} B \
         ({:.1} MiB for {n})",
        total * n as f64 / 1_048_576.0
    );
    println!(
        "translated snapshot: {snapshot_bytes:.0} B per Ingress ({routes} routes, {diagnostics} diagnostics)"
    );

    println!(
        "translation cache kept between builds: {cache_bytes:.0} B per Ingress (with its snapshot: \
         {cached_total:.0} B)"
    );
    println!(
        "rebuild after one Ingress changed, median of {}: {:.1} ms from nothing, {:.1} ms reusing \
         the last build (certificates, backends, annotations)",
        rebuilds.runs, rebuilds.full_ms, rebuilds.cached_ms
    );

    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench");
    let json = serde_json::json!({
        "objects_per_kind": n,
        "tls_secret": { "what": pem.what, "tls_crt_bytes": pem.chain.len(), "tls_key_bytes": pem.key.len() },
        "bytes_per_object": rows,
        "store_bytes_per_ingress_with_its_objects": total,
        "snapshot_bytes_per_ingress": snapshot_bytes,
        "snapshot_routes": routes,
        "cache_bytes_per_ingress": cache_bytes,
        "rebuild_one_ingress_changed_ms_p50": { "full": rebuilds.full_ms, "cached": rebuilds.cached_ms },
    });
    let written = std::fs::create_dir_all(&out).and_then(|()| {
        std::fs::write(
            out.join("store_memory.json"),
            serde_json::to_vec_pretty(&json).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("\nwrote {}", out.join("store_memory.json").display()),
        Err(e) => eprintln!("writing {}: {e}", out.display()),
    }
}
