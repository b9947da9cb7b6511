//! The Gateway API's matches and filters inside the data plane: a real [`Dataplane`] serving a
//! hand-built snapshot with the routes the controller makes of HTTPRoutes, the test kit's echo
//! backends, and a real HTTP/1.1 client in front. The expectations follow the
//! Gateway API's conformance tests (httproute-*.go).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use gantry_proxy::{
    policy::{
        HeaderModifier, Mirror, PathModifier, RedirectScheme, RequestConditions, RequestRedirect,
        UpstreamRequest, UpstreamTimeouts, UrlRewrite, ValueMatch, WeightedBackends,
    },
    Backend, BackendId, Dataplane, Endpoint, HostMatch, PathMatch, Policies, ProxyConfig, Route, RouteSource,
    RouteTableBuilder, Snapshot,
};
use gantry_testkit::{Echo, Seen};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

// === backends ===

/// The kit's echo backend named `name`, HTTP/1.1 only, answering with what it received (a [`Seen`]
/// as JSON) and the response headers `x-backend-drop: 1` and `x-backend-keep: 1`. A request for
/// `/hang...` gets no answer until [`Echo::release`].
async fn echo_backend(name: &'static str) -> Echo {
    echo_backend_hanging_on(name, "/hang").await
}

/// [`echo_backend`] that holds every request whose path starts with `hang_prefix` until released.
async fn echo_backend_hanging_on(name: &'static str, hang_prefix: &'static str) -> Echo {
    Echo::builder(name)
        .http1_only()
        .header("x-backend-drop", "1")
        .header("x-backend-keep", "1")
        .hang_on(hang_prefix)
        .start()
        .await
}

// === routes ===

fn backend(name: &str, endpoints: &[SocketAddr]) -> Arc<Backend> {
    Arc::new(Backend::new(
        id(name),
        endpoints.iter().map(|&addr| Endpoint { addr }).collect(),
    ))
}

fn id(name: &str) -> BackendId {
    BackendId {
        namespace: "gw".into(),
        service: name.into(),
        port: "8080".into(),
    }
}

fn httproute(path: PathMatch, backend: &Arc<Backend>, policies: Policies) -> Route {
    Route {
        path,
        conditions: None,
        backend: backend.clone(),
        source: RouteSource {
            kind: gantry_proxy::SourceKind::HttpRoute,
            namespace: "gw".into(),
            name: "route".into(),
        },
        policies: policies.into(),
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.into())
}

fn when(
    method: Option<Method>,
    headers: &[(&'static str, &str)],
    query: &[(&str, &str)],
) -> Option<Arc<RequestConditions>> {
    Some(Arc::new(RequestConditions {
        method,
        headers: headers
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), ValueMatch::Exact((*v).into())))
            .collect(),
        query: query
            .iter()
            .map(|(k, v)| ((*k).into(), ValueMatch::Exact((*v).into())))
            .collect(),
        tls: None,
    }))
}

/// One worker, with `routes` by host.
async fn dataplane(routes: Vec<(&str, Route)>) -> Dataplane {
    let config = ProxyConfig {
        access_log: false,
        ..ProxyConfig::default()
    };
    let dp = Dataplane::builder(config.clone())
        .workers(1)
        .start()
        .await
        .unwrap();
    let mut b = RouteTableBuilder::new();
    for (host, r) in routes {
        b.add(HostMatch::Exact(host.into()), r).unwrap();
    }
    dp.publish(Snapshot {
        routes: b.build(),
        address_routes: Vec::new(),
        config: Arc::new(config),
        ..Snapshot::default()
    });
    dp
}

// === client ===

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn seen(&self) -> Seen {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?} {:?}", self.status, self.body))
    }

    fn location(&self) -> &str {
        self.headers["location"].to_str().unwrap()
    }
}

/// A keep-alive HTTP/1.1 connection to the data plane.
struct Client(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Client {
    async fn new(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self(tx)
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        self.0.ready().await.unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

fn request(method: Method, host: &str, target: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(target).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).unwrap()
}

async fn get(dp: &Dataplane, host: &str, target: &str) -> Answer {
    Client::new(dp.http_addr())
        .await
        .send(request(Method::GET, host, target, &[]))
        .await
}

async fn metrics(dp: &Dataplane) -> String {
    let mut c = Client::new(dp.admin_addr()).await;
    let a = c.send(request(Method::GET, "admin", "/metrics", &[])).await;
    String::from_utf8(a.body.to_vec()).unwrap()
}

/// The value of a counter line in the metrics text (0 when absent).
fn counter(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// === tests ===

type RoutingCase<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn method_header_and_query_matches_pick_the_route_and_fall_through_to_a_shorter_prefix() {
    within(async {
        let (a, b, c) = (
            echo_backend("a").await,
            echo_backend("b").await,
            echo_backend("c").await,
        );
        let (ba, bb, bc) = (
            backend("a", &[a.addr]),
            backend("b", &[b.addr]),
            backend("c", &[c.addr]),
        );
        let with = |path: PathMatch, b: &Arc<Backend>, c| Route {
            conditions: c,
            ..httproute(path, b, Policies::default())
        };
        let host = "match.test";
        let dp = dataplane(vec![
            (host, with(prefix("/"), &ba, None)),
            (
                host,
                with(prefix("/api"), &bb, when(None, &[("version", "two")], &[])),
            ),
            (
                host,
                with(prefix("/api"), &bc, when(Some(Method::POST), &[], &[])),
            ),
            (
                host,
                with(
                    PathMatch::Exact("/q".into()),
                    &bb,
                    when(None, &[], &[("animal", "whale")]),
                ),
            ),
        ])
        .await;
        let mut client = Client::new(dp.http_addr()).await;
        // (method, target, headers, the backend that must answer)
        let cases: &[RoutingCase<'_>] = &[
            (Method::GET, "/api/x", &[("version", "two")], "b"),
            // The method match outranks the header match on the same path.
            (Method::POST, "/api/x", &[("version", "two")], "c"),
            // No route of /api accepts: the shorter prefix does.
            (Method::GET, "/api/x", &[], "a"),
            (Method::GET, "/api/x", &[("version", "three")], "a"),
            (Method::GET, "/q?animal=whale", &[], "b"),
            (Method::GET, "/q?animal=dolphin", &[], "a"),
            (Method::GET, "/q", &[], "a"),
        ];
        for (method, target, headers, want) in cases {
            let answer = client.send(request(method.clone(), host, target, headers)).await;
            assert_eq!(answer.status, 200, "{method} {target} {headers:?}");
            let seen = answer.seen();
            assert_eq!(seen.service, *want, "{method} {target} {headers:?}");
            assert_eq!(seen.target, *target);
        }
    })
    .await
}

#[tokio::test]
async fn request_redirects_build_location_and_status_from_the_request() {
    within(async {
        let a = echo_backend("a").await;
        let ba = backend("a", &[a.addr]);
        let redirect = |r: RequestRedirect| Policies {
            request_redirect: Some(Arc::new(r)),
            ..Policies::default()
        };
        let base = || RequestRedirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status: StatusCode::FOUND,
        };
        let host = "redirect.test";
        let routes = vec![
            (
                "/scheme",
                RequestRedirect {
                    scheme: Some(RedirectScheme::Https),
                    ..base()
                },
            ),
            (
                "/port",
                RequestRedirect {
                    port: Some(8083),
                    status: StatusCode::MOVED_PERMANENTLY,
                    ..base()
                },
            ),
            (
                "/host",
                RequestRedirect {
                    hostname: Some("example.org".into()),
                    ..base()
                },
            ),
            (
                "/original-prefix",
                RequestRedirect {
                    path: Some(PathModifier::Prefix {
                        matched: "/original-prefix".into(),
                        replacement: "/replacement-prefix".into(),
                    }),
                    ..base()
                },
            ),
            (
                "/full",
                RequestRedirect {
                    path: Some(PathModifier::Full("/full-path-replacement".into())),
                    status: StatusCode::PERMANENT_REDIRECT,
                    ..base()
                },
            ),
        ];
        let dp = dataplane(
            routes
                .into_iter()
                .map(|(p, r)| (host, httproute(prefix(p), &ba, redirect(r))))
                .collect(),
        )
        .await;
        // (Host header, target, status, Location)
        let cases = [
            (
                "redirect.test:8080",
                "/scheme",
                302,
                "https://redirect.test/scheme",
            ),
            (
                "redirect.test",
                "/port?x=1",
                301,
                "http://redirect.test:8083/port?x=1",
            ),
            ("redirect.test:8080", "/host", 302, "http://example.org:8080/host"),
            ("redirect.test", "/host", 302, "http://example.org/host"),
            (
                "redirect.test",
                "/original-prefix/lemon?x=1",
                302,
                "http://redirect.test/replacement-prefix/lemon?x=1",
            ),
            (
                "redirect.test",
                "/full/path/original",
                308,
                "http://redirect.test/full-path-replacement",
            ),
        ];
        let mut client = Client::new(dp.http_addr()).await;
        for (host_header, target, status, location) in cases {
            let answer = client.send(request(Method::GET, host_header, target, &[])).await;
            assert_eq!(answer.status, status, "{host_header}{target}");
            assert_eq!(answer.location(), location, "{host_header}{target}");
        }
        assert!(
            a.try_next_request().is_none(),
            "a redirect never reaches the backend"
        );
    })
    .await
}

#[tokio::test]
async fn url_rewrites_change_the_path_and_host_the_backend_sees() {
    within(async {
        let a = echo_backend("a").await;
        let ba = backend("a", &[a.addr]);
        let rewrite = |hostname: Option<&'static str>, path: PathModifier| Policies {
            upstream: UpstreamRequest {
                url_rewrite: Some(Arc::new(UrlRewrite {
                    hostname: hostname.map(HeaderValue::from_static),
                    path: Some(path),
                })),
                ..UpstreamRequest::default()
            },
            ..Policies::default()
        };
        let replace = |matched: &str, replacement: &str| PathModifier::Prefix {
            matched: matched.into(),
            replacement: replacement.into(),
        };
        let host = "rewrite.test";
        let dp = dataplane(vec![
            (
                host,
                httproute(
                    prefix("/prefix/one"),
                    &ba,
                    rewrite(Some("elsewhere.example"), replace("/prefix/one", "/one")),
                ),
            ),
            (
                host,
                httproute(
                    prefix("/strip-prefix"),
                    &ba,
                    rewrite(None, replace("/strip-prefix", "/")),
                ),
            ),
            (
                host,
                httproute(
                    prefix("/full/one"),
                    &ba,
                    rewrite(None, PathModifier::Full("/one".into())),
                ),
            ),
        ])
        .await;
        // (target, what the backend sees, its Host)
        let cases = [
            ("/prefix/one/two?x=1", "/one/two?x=1", "elsewhere.example"),
            ("/strip-prefix/three", "/three", host),
            ("/strip-prefix", "/", host),
            ("/full/one/two?y=2", "/one?y=2", host),
        ];
        let mut client = Client::new(dp.http_addr()).await;
        for (target, want, want_host) in cases {
            let answer = client.send(request(Method::GET, host, target, &[])).await;
            assert_eq!(answer.status, 200, "{target}");
            let seen = answer.seen();
            assert_eq!(seen.target, want, "{target}");
            assert_eq!(seen.host.as_deref(), Some(want_host), "{target}");
            // X-Forwarded-Host keeps the client's host.
            assert_eq!(seen.header("x-forwarded-host"), [host], "{target}");
        }
    })
    .await
}

#[tokio::test]
async fn request_and_response_header_modifiers_set_add_and_remove() {
    within(async {
        let a = echo_backend("a").await;
        let ba = backend("a", &[a.addr]);
        let h = |n: &'static str| HeaderName::from_static(n);
        let v = HeaderValue::from_static;
        let policies = Policies {
            upstream: UpstreamRequest {
                headers: Some(Arc::new(HeaderModifier {
                    set: vec![(h("x-set"), v("set-overwrites-values"))],
                    add: vec![(h("x-add"), v("added"))],
                    remove: vec![h("x-remove")],
                })),
                ..UpstreamRequest::default()
            },
            response_header_modifier: Some(Arc::new(HeaderModifier {
                set: vec![(h("x-resp-set"), v("yes"))],
                add: vec![(h("x-backend-keep"), v("2"))],
                remove: vec![h("x-backend-drop")],
            })),
            ..Policies::default()
        };
        let dp = dataplane(vec![("headers.test", httproute(prefix("/"), &ba, policies))]).await;
        let mut client = Client::new(dp.http_addr()).await;
        let answer = client
            .send(request(
                Method::GET,
                "headers.test",
                "/",
                &[("x-set", "one"), ("x-add", "client"), ("x-remove", "bye")],
            ))
            .await;
        assert_eq!(answer.status, 200);
        let seen = answer.seen();
        assert_eq!(seen.header("x-set"), ["set-overwrites-values"]);
        assert_eq!(seen.header("x-add"), ["client", "added"]);
        assert!(seen.header("x-remove").is_empty());
        let keep: Vec<_> = answer.headers.get_all("x-backend-keep").iter().collect();
        assert_eq!(keep, ["1", "2"]);
        assert_eq!(answer.headers["x-resp-set"], "yes");
        assert!(!answer.headers.contains_key("x-backend-drop"));
    })
    .await
}

#[tokio::test]
async fn a_three_to_one_split_sends_about_a_quarter_of_requests_to_the_lighter_backend() {
    within(async {
        let (a, b) = (echo_backend("a").await, echo_backend("b").await);
        let (ba, bb) = (backend("a", &[a.addr]), backend("b", &[b.addr]));
        let policies = Policies {
            split: Some(Arc::new(WeightedBackends {
                backends: vec![(3, ba.clone()), (1, bb.clone())],
            })),
            ..Policies::default()
        };
        let dp = dataplane(vec![("split.test", httproute(prefix("/"), &ba, policies))]).await;
        let mut client = Client::new(dp.http_addr()).await;
        let n = 400;
        let mut to_b = 0;
        for _ in 0..n {
            let answer = client.send(request(Method::GET, "split.test", "/", &[])).await;
            assert_eq!(answer.status, 200);
            if answer.seen().service == "b" {
                to_b += 1;
            }
        }
        // Expected 100; a binomial(400, 1/4) is outside 60..=140 with probability below 1e-5.
        assert!(
            (60..=140).contains(&to_b),
            "{to_b} of {n} went to the weight-1 backend"
        );
    })
    .await
}

#[tokio::test]
async fn invalid_backends_answer_500_and_a_backend_without_endpoints_503() {
    within(async {
        let a = echo_backend("a").await;
        let ba = backend("a", &[a.addr]);
        let invalid = Arc::new(Backend::invalid(id("missing"), "Service gw/missing not found"));
        let empty = backend("empty", &[]);
        let split = |backends: Vec<(u32, Arc<Backend>)>| Policies {
            split: Some(Arc::new(WeightedBackends { backends })),
            ..Policies::default()
        };
        let host = "invalid.test";
        let dp = dataplane(vec![
            (host, httproute(prefix("/invalid"), &invalid, Policies::default())),
            (
                host,
                httproute(
                    prefix("/only-invalid"),
                    &invalid,
                    split(vec![(1, invalid.clone())]),
                ),
            ),
            (
                host,
                httproute(prefix("/zero"), &ba, split(vec![(0, ba.clone())])),
            ),
            (host, httproute(prefix("/empty"), &empty, Policies::default())),
            (
                host,
                httproute(
                    prefix("/valid"),
                    &ba,
                    split(vec![(0, invalid.clone()), (1, ba.clone())]),
                ),
            ),
        ])
        .await;
        let mut client = Client::new(dp.http_addr()).await;
        for (target, status) in [
            ("/invalid", 500),
            ("/only-invalid", 500),
            ("/zero", 500),
            ("/empty", 503),
            ("/valid", 200),
        ] {
            let answer = client.send(request(Method::GET, host, target, &[])).await;
            assert_eq!(answer.status, status, "{target}");
        }
    })
    .await
}

#[tokio::test]
async fn a_mirrored_request_reaches_the_mirror_while_the_client_gets_the_primary_s_answer() {
    within(async {
        let (a, m) = (echo_backend("a").await, echo_backend("mirror").await);
        let (ba, bm) = (backend("a", &[a.addr]), backend("mirror", &[m.addr]));
        let policies = Policies {
            mirrors: Some(Arc::from([Mirror {
                backend: bm,
                per_million: 1_000_000,
            }])),
            ..Policies::default()
        };
        let dp = dataplane(vec![("mirror.test", httproute(prefix("/"), &ba, policies))]).await;
        let mut client = Client::new(dp.http_addr()).await;
        let req = Request::post("/echo?x=1")
            .header("host", "mirror.test")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let answer = client.send(req).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.seen().service, "a");
        let mirrored = m.next_request().await;
        assert_eq!(mirrored.method, "POST");
        assert_eq!(mirrored.target, "/echo?x=1");
        assert_eq!(mirrored.host.as_deref(), Some("mirror.test"));
        assert_eq!(mirrored.body.as_deref(), Some("payload"));

        let text = metrics(&dp).await;
        assert_eq!(
            counter(&text, r#"mirrored_requests_total{result="sent"}"#),
            1,
            "{text}"
        );
        m.release();
    })
    .await
}

#[tokio::test]
async fn a_mirror_that_never_answers_does_not_hold_up_the_client_and_streaming_bodies_are_not_mirrored() {
    within(async {
        let a = echo_backend("a").await;
        let m = echo_backend_hanging_on("mirror", "/").await;
        let (ba, bm) = (backend("a", &[a.addr]), backend("mirror", &[m.addr]));
        let policies = Policies {
            mirrors: Some(Arc::from([Mirror {
                backend: bm,
                per_million: 1_000_000,
            }])),
            ..Policies::default()
        };
        let dp = dataplane(vec![("mirror.test", httproute(prefix("/"), &ba, policies))]).await;
        let mut client = Client::new(dp.http_addr()).await;
        for _ in 0..3 {
            let answer = client.send(request(Method::GET, "mirror.test", "/x", &[])).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.seen().service, "a");
        }
        // The mirror has them all, and is still holding them.
        for _ in 0..3 {
            assert_eq!(m.next_request().await.target, "/x");
        }
        // A body larger than what is read ahead is still streaming when the request is forwarded:
        // the primary gets it whole, the mirror nothing.
        let big = Bytes::from(vec![b'x'; 256 * 1024]);
        let req = Request::post("/big")
            .header("host", "mirror.test")
            .body(Full::new(big.clone()))
            .unwrap();
        let answer = client.send(req).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.seen().body_len, big.len());
        let text = metrics(&dp).await;
        assert_eq!(
            counter(&text, r#"mirrored_requests_total{result="sent"}"#),
            3,
            "{text}"
        );
        let streaming = r#"mirrored_requests_total{result="dropped_streaming"}"#;
        assert_eq!(counter(&text, streaming), 1, "{text}");
        assert!(
            m.try_next_request().is_none(),
            "the streaming request was not mirrored"
        );
        m.release();
    })
    .await
}

#[tokio::test]
async fn a_request_timeout_answers_504_while_the_backend_still_hangs() {
    within(async {
        let a = echo_backend("a").await;
        let ba = backend("a", &[a.addr]);
        let timeouts = |request, backend_request| Policies {
            timeouts: UpstreamTimeouts {
                request,
                backend_request,
                ..UpstreamTimeouts::default()
            },
            ..Policies::default()
        };
        let short = Some(Duration::from_millis(200));
        let host = "timeout.test";
        let dp = dataplane(vec![
            (
                host,
                httproute(prefix("/hang/request"), &ba, timeouts(short, None)),
            ),
            (
                host,
                httproute(prefix("/hang/attempt"), &ba, timeouts(None, short)),
            ),
            (host, httproute(prefix("/fast"), &ba, timeouts(short, short))),
        ])
        .await;
        assert_eq!(get(&dp, host, "/fast").await.status, 200);
        a.next_request().await;
        for target in ["/hang/request", "/hang/attempt"] {
            let answer = get(&dp, host, target).await;
            assert_eq!(answer.status, 504, "{target}");
            // The backend did get the request, and has not answered it.
            assert_eq!(a.next_request().await.target, target);
        }
        a.release();
    })
    .await
}

/// A Gateway with an address of its own: connections to that local address get its table, every
/// other connection the shared one (the Ingresses'), with no leaking between them. The data
/// plane listens on 127.0.0.1, so the address table for 127.0.0.1 is the one this client reaches.
#[tokio::test]
async fn the_local_address_a_client_dialled_chooses_the_route_table() {
    within(async {
        let shared = echo_backend("shared").await;
        let own = echo_backend("own").await;
        let other = echo_backend("other").await;
        let (bs, bo, bx) = (
            backend("shared", &[shared.addr]),
            backend("own", &[own.addr]),
            backend("other", &[other.addr]),
        );
        let config = ProxyConfig {
            access_log: false,
            ..ProxyConfig::default()
        };
        let dp = Dataplane::builder(config.clone())
            .workers(1)
            .start()
            .await
            .unwrap();
        assert_eq!(dp.http_addr().ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        let table = |host: &str, path: &str, b: &Arc<Backend>| {
            let mut t = RouteTableBuilder::new();
            t.add(
                HostMatch::Exact(host.into()),
                httproute(prefix(path), b, Policies::default()),
            )
            .unwrap();
            t.build()
        };
        let snapshot = |address_routes| Snapshot {
            routes: table("site.test", "/", &bs),
            address_routes,
            config: Arc::new(config.clone()),
            ..Snapshot::default()
        };
        dp.publish(snapshot(vec![
            ([127, 0, 0, 1].into(), table("site.test", "/gw", &bo)),
            ([127, 0, 0, 9].into(), table("site.test", "/", &bx)),
        ]));
        assert_eq!(get(&dp, "site.test", "/gw/x").await.seen().service, "own");
        // Only the address's table: `/` of the shared table does not leak into it.
        assert_eq!(
            get(&dp, "site.test", "/elsewhere").await.status,
            StatusCode::NOT_FOUND
        );

        // Without a table of its own, 127.0.0.1 gets the shared table.
        dp.publish(snapshot(vec![(
            [127, 0, 0, 9].into(),
            table("site.test", "/", &bx),
        )]));
        let a = get(&dp, "site.test", "/gw/x").await;
        assert_eq!(a.seen().service, "shared");
        let dump = Client::new(dp.admin_addr())
            .await
            .send(request(Method::GET, "admin", "/debug/routes", &[]))
            .await;
        let dump: serde_json::Value = serde_json::from_slice(&dump.body).unwrap();
        let addresses: Vec<_> = dump["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["address"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(addresses, vec![None, Some("127.0.0.9".to_owned())]);
    })
    .await;
}

/// A `RequestHeaderModifier` on a `backendRef` applies to the requests sent to that backend only,
/// after the rule's own (HTTPRouteBackendRequestHeaderModifier).
#[tokio::test]
async fn each_weighted_backend_gets_its_own_request_headers_after_the_rule_s() {
    within(async {
        let (a, b) = (echo_backend("a").await, echo_backend("b").await);
        let h = |n: &'static str| HeaderName::from_static(n);
        let v = HeaderValue::from_static;
        let with_headers = |backend: Arc<Backend>, value: &'static str| {
            let mut with = (*backend).clone();
            with.request_headers = Some(Arc::new(HeaderModifier {
                set: vec![(h("x-backend"), v(value)), (h("x-rule"), v("overridden"))],
                add: vec![],
                remove: vec![],
            }));
            Arc::new(with)
        };
        let (ba, bb) = (
            with_headers(backend("a", &[a.addr]), "for-a"),
            with_headers(backend("b", &[b.addr]), "for-b"),
        );
        let policies = Policies {
            upstream: UpstreamRequest {
                headers: Some(Arc::new(HeaderModifier {
                    set: vec![(h("x-rule"), v("rule")), (h("x-rule-only"), v("yes"))],
                    add: vec![],
                    remove: vec![],
                })),
                ..UpstreamRequest::default()
            },
            split: Some(Arc::new(WeightedBackends {
                backends: vec![(1, ba.clone()), (1, bb)],
            })),
            ..Policies::default()
        };
        let dp = dataplane(vec![("split.test", httproute(prefix("/"), &ba, policies))]).await;
        let mut client = Client::new(dp.http_addr()).await;
        let mut seen_by = std::collections::BTreeMap::new();
        for _ in 0..40 {
            let seen = client
                .send(request(Method::GET, "split.test", "/", &[]))
                .await
                .seen();
            assert_eq!(seen.header("x-backend"), [format!("for-{}", seen.service)]);
            assert_eq!(
                seen.header("x-rule"),
                ["overridden"],
                "the backendRef's after the rule's"
            );
            assert_eq!(seen.header("x-rule-only"), ["yes"]);
            *seen_by.entry(seen.service).or_insert(0) += 1;
        }
        assert_eq!(seen_by.len(), 2, "both backends were drawn: {seen_by:?}");
    })
    .await
}
