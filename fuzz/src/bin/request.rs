//! Whole client requests (HTTP/1.1, or HTTP/2 when the input starts with the preface) through the
//! data plane's request pipeline, over an in-memory duplex.
//!
//! `gantry_proxy::pipeline::Pipeline::handle` takes a `Request<hyper::body::Incoming>`, which only
//! hyper can make, so the input is served the way `server::serve` does: a hyper-util `auto`
//! connection whose service calls `Pipeline::handle`. The snapshot has an exact host, a wildcard
//! host with the HTTPS redirect, an Exact path, a backend without endpoints (503) and a default
//! route; routed requests are forwarded to an in-process backend on 127.0.0.1 that answers every
//! read with a small 200. Property: never panic (the response itself is not checked).
use std::{convert::Infallible, net::SocketAddr, sync::Arc, sync::OnceLock, time::Duration};

use gantry_proxy::backend::BackendId;
use gantry_proxy::{
    conn::ConnInfo,
    metrics::Metrics,
    pipeline::Pipeline,
    routes::{HostMatch, PathMatch, Route, RouteSource, RouteTableBuilder},
    Backend, Endpoint, Policies, Snapshot, SnapshotHandle,
};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    runtime::Runtime,
};

const LIMIT: Duration = Duration::from_millis(500);

struct Env {
    rt: Runtime,
    pipeline: Arc<Pipeline>,
}

fn backend_id(service: &str) -> BackendId {
    BackendId {
        namespace: "default".into(),
        service: service.into(),
        port: "http".into(),
    }
}

fn route(path: PathMatch, backend: &Arc<Backend>, policies: Policies) -> Route {
    Route {
        path,
        conditions: None,
        backend: backend.clone(),
        source: RouteSource {
            kind: gantry_proxy::SourceKind::Ingress,
            namespace: "default".into(),
            name: "fuzz".into(),
        },
        policies: policies.into(),
    }
}

fn snapshot(backend_addr: SocketAddr) -> Snapshot {
    let up = Arc::new(Backend::new(
        backend_id("up"),
        vec![Endpoint { addr: backend_addr }],
    ));
    let down = Arc::new(Backend::unavailable(backend_id("down"), "no endpoints"));
    let mut b = RouteTableBuilder::new();
    let exact = |h: &str| HostMatch::Exact(h.into());
    b.add(
        exact("fuzz.test"),
        route(PathMatch::Prefix("/".into()), &up, Policies::default()),
    )
    .expect("route");
    b.add(
        exact("fuzz.test"),
        route(PathMatch::Exact("/down".into()), &down, Policies::default()),
    )
    .expect("route");
    b.add(
        exact("fuzz.test"),
        route(PathMatch::Prefix("/a/b".into()), &up, Policies::default()),
    )
    .expect("route");
    b.add(
        HostMatch::Wildcard("wild.test".into()),
        route(PathMatch::Prefix("/".into()), &up, Policies::https_redirect(true)),
    )
    .expect("route");
    b.set_default(route(PathMatch::Prefix("/".into()), &up, Policies::default()))
        .expect("default route");
    Snapshot {
        generation: 1,
        routes: b.build(),
        address_routes: Vec::new(),
        ..Snapshot::default()
    }
}

/// The backend: answers every read with a small 200, until the proxy closes.
async fn backend(listener: TcpListener) {
    loop {
        let Ok((mut io, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if io
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: up\r\n\r\nok")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        rt.spawn(backend(listener));
        let pipeline = Arc::new(Pipeline::new(
            SnapshotHandle::new(snapshot(addr)),
            Metrics::default(),
            0, // no connection limit
        ));
        Env { rt, pipeline }
    })
}

fn run(data: &[u8]) {
    let env = env();
    env.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let pipeline = env.pipeline.clone();
        let info = Arc::new(ConnInfo::new(
            SocketAddr::from(([192, 0, 2, 1], 40000)),
            80,
            false,
        ));
        let service = service_fn(move |req| {
            let pipeline = pipeline.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(pipeline.handle(&info, req).await) }
        });
        let conn = tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // The client half-closes after its input; the responses must still be written.
            builder.http1().half_close(true);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(server), service)
                .await;
        });
        let _ = tokio::time::timeout(LIMIT, async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            if std::env::var_os("GANTRY_FUZZ_DEBUG").is_some() {
                eprintln!("{}", String::from_utf8_lossy(&out));
            }
        })
        .await;
        drop(client);
        let _ = tokio::time::timeout(LIMIT, conn).await;
    });
}

fn main() {
    // The runtime, the backend and its listener are made lazily in the first execution, i.e. after
    // AFL's fork server has forked: a runtime made before the fork would share its epoll instance
    // with every child. The access log is on by default, so its formatting of fuzzed requests is
    // exercised too; its lines go to afl-fuzz's /dev/null.
    afl::fuzz!(|data: &[u8]| {
        run(data);
    });
}
