//! Route table benchmarks: `RouteTable::lookup` per request, and building a table of 100k routes.
//!
//! The table: 10,000 hosts with 10 paths each (9,000 exact hosts, 1,000 wildcard hosts), plus
//! 10 rules without host, and a default route. Requests cycle through 4,096 pre-built
//! (host, path) pairs, so one benchmark does not sit on a single hot cache line.
//!
//! Run with `cargo bench -p gantry-proxy --bench lookup`.
#![forbid(unsafe_code)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gantry_proxy::{
    Backend, BackendId, HostMatch, PathMatch, Route, RouteSource, RouteTable, RouteTableBuilder,
};

const HOSTS: usize = 10_000;
/// One host in ten is a wildcard.
const WILDCARD_EVERY: usize = 10;
const REQUESTS: usize = 4_096;

/// The ten paths of every host: a realistic mix of Prefix and Exact rules.
fn host_paths(i: usize) -> [PathMatch; 10] {
    use PathMatch::{Exact, Prefix};
    [
        Prefix("/".into()),
        Prefix("/api".into()),
        Prefix("/api/v1".into()),
        Prefix(format!("/api/v1/tenants/{i}")),
        Exact("/healthz".into()),
        Exact("/login".into()),
        Prefix("/static/".into()),
        Exact(format!("/app/{i}/index.html")),
        Prefix("/docs/guide".into()),
        Exact("/api/v1/status".into()),
    ]
}

/// The rules without host. None of them is Prefix `/`, so unknown hosts can miss.
fn any_paths() -> [PathMatch; 10] {
    use PathMatch::{Exact, Prefix};
    [
        Prefix("/.well-known/acme-challenge".into()),
        Exact("/healthz".into()),
        Exact("/readyz".into()),
        Prefix("/shared/assets".into()),
        Prefix("/shared/api/v2".into()),
        Exact("/favicon.ico".into()),
        Prefix("/oauth2".into()),
        Exact("/robots.txt".into()),
        Prefix("/status/".into()),
        Exact("/".into()),
    ]
}

fn host(i: usize) -> HostMatch {
    if i % WILDCARD_EVERY == 0 {
        HostMatch::Wildcard(format!("tenant{i}.example.net"))
    } else {
        HostMatch::Exact(format!("svc{i}.team{}.example.com", i % 97))
    }
}

fn route(path: PathMatch, backend: &Arc<Backend>, source: &RouteSource) -> Route {
    Route {
        path,
        conditions: None,
        backend: backend.clone(),
        source: source.clone(),
        policies: Default::default(),
    }
}

/// Every (host, route) of the table, in the order the controller would add them.
fn routes() -> Vec<(HostMatch, Route)> {
    let id = BackendId {
        namespace: "bench".into(),
        service: "svc".into(),
        port: "80".into(),
    };
    let backend = Arc::new(Backend::new(id, vec![]));
    let source = RouteSource {
        kind: gantry_proxy::SourceKind::Ingress,
        namespace: "bench".into(),
        name: "ingress".into(),
    };
    let mut all = Vec::with_capacity(HOSTS * 10 + 10);
    for i in 0..HOSTS {
        for path in host_paths(i) {
            all.push((host(i), route(path, &backend, &source)));
        }
    }
    for path in any_paths() {
        all.push((HostMatch::Any, route(path, &backend, &source)));
    }
    all
}

fn table() -> RouteTable {
    let id = BackendId {
        namespace: "bench".into(),
        service: "default".into(),
        port: "80".into(),
    };
    let backend = Arc::new(Backend::new(id, vec![]));
    let source = RouteSource {
        kind: gantry_proxy::SourceKind::Ingress,
        namespace: "bench".into(),
        name: "default".into(),
    };
    let mut builder = RouteTableBuilder::new();
    for (host, route) in routes() {
        builder.add(host, route).expect("no conflicts in the bench table");
    }
    builder
        .set_default(route(PathMatch::Prefix("/".into()), &backend, &source))
        .unwrap();
    builder.build()
}

/// Request paths for the hosts of the table, one per rule kind, hitting different depths.
fn request_path(i: usize, n: usize) -> String {
    match n % 6 {
        0 => "/".into(),
        1 => format!("/api/v1/tenants/{i}/orders/42"),
        2 => "/static/css/site.css".into(),
        3 => format!("/app/{i}/index.html"),
        4 => "/api/v1/status".into(),
        _ => "/docs/guide/install".into(),
    }
}

/// `REQUESTS` (host, path) pairs, spread over the table with a fixed seed.
fn requests(mut make: impl FnMut(&mut fastrand::Rng, usize) -> (String, String)) -> Vec<(String, String)> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..REQUESTS).map(|n| make(&mut rng, n)).collect()
}

fn bench_lookup(c: &mut Criterion) {
    let table = table();
    assert_eq!(table.len(), HOSTS * 10 + 10);

    let exact_hits = requests(|rng, n| {
        let i = loop {
            let i = rng.usize(..HOSTS);
            if i % WILDCARD_EVERY != 0 {
                break i;
            }
        };
        (format!("svc{i}.team{}.example.com", i % 97), request_path(i, n))
    });
    let wildcard_hits = requests(|rng, n| {
        let i = rng.usize(..HOSTS / WILDCARD_EVERY) * WILDCARD_EVERY;
        (
            format!("pod-{}.tenant{i}.example.net", rng.u16(..)),
            request_path(i, n),
        )
    });
    let any_hits = requests(|rng, n| {
        let path = [
            "/healthz",
            "/.well-known/acme-challenge/token",
            "/shared/assets/app.js",
            "/",
        ][n % 4];
        (format!("unknown{}.example.org", rng.u32(..)), path.into())
    });
    let misses = requests(|rng, n| {
        let path = ["/index.html", "/api/v1/users", "/shared/other", "/statusx"][n % 4];
        (format!("unknown{}.example.org", rng.u32(..)), path.into())
    });
    let default_name = table.default_route().unwrap().source.name.clone();
    for (host, path) in &misses {
        assert_eq!(
            table.lookup(host, path).unwrap().source.name,
            default_name,
            "{host}{path}"
        );
    }
    for (host, path) in exact_hits.iter().chain(&wildcard_hits).chain(&any_hits) {
        assert_ne!(
            table.lookup(host, path).unwrap().source.name,
            default_name,
            "{host}{path}"
        );
    }

    let mut group = c.benchmark_group("lookup");
    group.measurement_time(Duration::from_secs(5));
    let cases = [
        ("exact_host_hit", &exact_hits),
        ("wildcard_host_hit", &wildcard_hits),
        ("any_host_hit", &any_hits),
        ("miss_to_default", &misses),
    ];
    // What the pipeline passes: the request's method, headers, query and listener, borrowed.
    let headers = http::HeaderMap::new();
    let facts = gantry_proxy::policy::RequestFacts::get(&headers);
    for (name, requests) in cases {
        group.bench_function(name, |b| {
            let mut n = 0;
            b.iter(|| {
                let (host, path) = &requests[n % REQUESTS];
                n += 1;
                black_box(table.lookup_request(black_box(host), black_box(path), black_box(&facts)))
            })
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("add_100k_routes_and_build", |b| {
        b.iter_batched(
            routes,
            |routes| {
                let mut builder = RouteTableBuilder::new();
                for (host, route) in routes {
                    builder.add(host, route).unwrap();
                }
                builder.build()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_build);
criterion_main!(benches);
