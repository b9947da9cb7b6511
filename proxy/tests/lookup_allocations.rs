//! The route lookup is on every request's path and must not allocate, also when it walks a
//! host's parent domains for the Gateway API's any-depth wildcards. A counting global allocator
//! checks it; this file holds one test so that no other test allocates meanwhile.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use gantry_proxy::{Backend, BackendId, HostMatch, PathMatch, Route, RouteSource, RouteTableBuilder};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn route(name: &str) -> Route {
    let id = BackendId {
        namespace: "default".into(),
        service: name.into(),
        port: "80".into(),
    };
    Route {
        path: PathMatch::Prefix("/".into()),
        conditions: None,
        backend: Arc::new(Backend::new(id, vec![])),
        source: RouteSource {
            kind: gantry_proxy::SourceKind::HttpRoute,
            namespace: "default".into(),
            name: name.into(),
        },
        policies: Default::default(),
    }
}

#[test]
fn host_lookups_with_any_depth_wildcards_do_not_allocate() {
    let mut b = RouteTableBuilder::new();
    b.add(HostMatch::Exact("a.example.com".into()), route("exact"))
        .unwrap();
    b.add(HostMatch::Wildcard("example.com".into()), route("one-label"))
        .unwrap();
    b.add(
        HostMatch::WildcardAnyDepth("example.com".into()),
        route("any-depth"),
    )
    .unwrap();
    b.add(HostMatch::WildcardAnyDepth("com".into()), route("com"))
        .unwrap();
    b.add(HostMatch::Any, route("any")).unwrap();
    let table = b.build();
    let hosts = [
        ("a.example.com", "exact"),
        ("b.example.com", "one-label"),
        ("x.y.example.com", "any-depth"),
        ("x.y.z.other.com", "com"),
        ("x.y.z.other.org", "any"),
        ("com", "any"),
    ];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut answers = [""; 6];
    for (answer, (host, _)) in answers.iter_mut().zip(hosts) {
        *answer = table.lookup(host, "/x").map_or("", |r| &r.source.name);
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(answers, hosts.map(|(_, want)| want));
    assert_eq!(allocated, 0, "lookups allocated {allocated} times");
}
