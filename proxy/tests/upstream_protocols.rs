//! Upstream protocols inside the data plane: a real [`Dataplane`] serving a hand-built snapshot
//! whose routes ask for HTTPS, h2c and HTTP/2-over-TLS backends, real servers behind it (the test
//! kit's echo backend over h2c and TLS, tonic's gRPC health service) and real clients in front (hyper's HTTP/1.1 and
//! HTTP/2 clients, tonic over h2c and over TLS with ALPN h2).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::Bytes;
use futures_util::stream;
use gantry_proxy::{
    policy::{UpstreamProtocol, UpstreamRequest, UpstreamTimeouts, UpstreamTls},
    Backend, BackendId, CertTable, Dataplane, Endpoint, HostMatch, PathMatch, Policies, ProxyConfig, Route,
    RouteSource, RouteTableBuilder, Snapshot, TlsCert,
};
use gantry_testkit::{
    grpc,
    tls::{issue, new_ca, server_config},
    Echo, EchoBuilder,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint as GrpcEndpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

// === the data plane ===

fn route(endpoints: &[SocketAddr], upstream: UpstreamRequest) -> Route {
    route_with(
        endpoints,
        Policies {
            upstream,
            ..Policies::default()
        },
    )
}

fn route_with(endpoints: &[SocketAddr], policies: Policies) -> Route {
    let id = BackendId {
        namespace: "default".into(),
        service: "svc".into(),
        port: "80".into(),
    };
    Route {
        path: PathMatch::Prefix("/".into()),
        conditions: None,
        backend: Arc::new(Backend::new(
            id,
            endpoints.iter().map(|&addr| Endpoint { addr }).collect(),
        )),
        source: RouteSource {
            kind: gantry_proxy::SourceKind::Ingress,
            namespace: "default".into(),
            name: "test".into(),
        },
        policies: policies.into(),
    }
}

fn upstream(protocol: UpstreamProtocol, tls: Option<UpstreamTls>) -> UpstreamRequest {
    UpstreamRequest {
        protocol,
        tls: tls.map(Arc::new),
        ..UpstreamRequest::default()
    }
}

/// One worker (so that connection counts are exact), with `routes` by host.
async fn dataplane(routes: Vec<(&str, Route)>, certs: CertTable) -> Dataplane {
    let config = ProxyConfig {
        access_log: false,
        ..ProxyConfig::default()
    };
    let dp = Dataplane::builder(config.clone()).start().await.unwrap();
    let mut b = RouteTableBuilder::new();
    for (host, r) in routes {
        b.add(HostMatch::Exact(host.into()), r).unwrap();
    }
    dp.publish(Snapshot {
        routes: b.build(),
        address_routes: Vec::new(),
        certs,
        config: Arc::new(config),
        ..Snapshot::default()
    });
    dp
}

// === backends ===

/// The kit's echo backend (its JSON describes the request as the backend saw it: version,
/// authority, Host, headers, path, body length, request trailers), followed by the response
/// trailer `x-backend-trailer: done`.
fn echo() -> EchoBuilder {
    Echo::builder("svc").trailer("x-backend-trailer", "done")
}

/// An HTTP/2-only cleartext backend (prior knowledge, no HTTP/1.1 at all). With
/// `goaway_after_first`, every connection is shut down gracefully (GOAWAY) after its first
/// response.
async fn h2c_backend(goaway_after_first: bool) -> Echo {
    let b = echo().http2_only();
    if goaway_after_first {
        b.goaway_after_first().start().await
    } else {
        b.start().await
    }
}

/// An HTTPS backend speaking HTTP/1.1, recording the SNI of each handshake.
async fn tls_backend(config: Arc<rustls::ServerConfig>) -> Echo {
    echo().http1_only().tls(config).start().await
}

// === clients ===

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn collect(resp: Response<Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// One HTTP/1.1 request on a new connection to `addr`.
async fn h1<B>(addr: SocketAddr, req: Request<B>) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    collect(tx.send_request(req).await.unwrap()).await
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::default())
        .unwrap()
}

/// A body of `data` followed by the trailer `x-client-trailer: value`.
fn with_trailer(data: &'static str, value: &'static str) -> BoxBody<Bytes, Infallible> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static(value));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(data.as_bytes()))),
        Ok(Frame::trailers(trailers)),
    ];
    StreamBody::new(stream::iter(frames)).boxed()
}

async fn metrics(dp: &Dataplane) -> String {
    let req = Request::get("/metrics")
        .header("host", "admin")
        .body(Full::<Bytes>::default())
        .unwrap();
    String::from_utf8(h1(dp.admin_addr(), req).await.body.to_vec()).unwrap()
}

/// The value of a counter in the metrics text (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// === tests ===

#[tokio::test]
async fn h2c_backend_reached_by_http1_and_http2_clients_on_one_multiplexed_connection() {
    within(async {
        let backend = h2c_backend(false).await;
        let dp = dataplane(
            vec![(
                "h2c.test",
                route(&[backend.addr], upstream(UpstreamProtocol::H2c, None)),
            )],
            CertTable::default(),
        )
        .await;

        // An HTTP/1.1 client: the backend sees HTTP/2 with :authority from Host, TE: trailers,
        // and no connection-specific header.
        let req = Request::post("/echo?q=1")
            .header("host", "h2c.test")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let a = h1(dp.http_addr(), req).await;
        assert_eq!(a.status, 200);
        let seen = a.json();
        assert_eq!(seen["proto"], "HTTP/2.0");
        assert_eq!(seen["authority"], "h2c.test");
        assert_eq!(seen["scheme"], "http");
        assert_eq!(seen["path"], "/echo");
        assert_eq!(seen["headers"]["te"], "trailers");
        assert_eq!(seen["headers"]["connection"], serde_json::Value::Null);
        assert_eq!(seen["body_len"], 5);
        assert!(seen["headers"]["x-forwarded-for"].is_string(), "{seen}");
        assert_eq!(a.headers["server"], "gantry");

        // A mebibyte each way, streamed through the flow-control windows.
        let req = Request::post("/post")
            .header("host", "h2c.test")
            .body(Full::new(Bytes::from(vec![b'u'; 1 << 20])))
            .unwrap();
        assert_eq!(h1(dp.http_addr(), req).await.json()["body_len"], 1 << 20);
        let a = h1(dp.http_addr(), get("h2c.test", "/bytes/1048576")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), 1 << 20);

        // An HTTP/2 client (h2c prior knowledge to the plain listener): trailers both ways.
        let tcp = TcpStream::connect(dp.http_addr()).await.unwrap();
        let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::post("http://h2c.test/trailers")
            .body(with_trailer("abc", "from-client"))
            .unwrap();
        let a = collect(tx.clone().send_request(req).await.unwrap()).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["trailers"]["x-client-trailer"], "from-client");
        assert_eq!(a.json()["body_len"], 3);
        let trailers = a.trailers.expect("response trailers");
        assert_eq!(trailers["x-backend-trailer"], "done");

        // Twenty concurrent requests share the one upstream connection as streams.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let mut tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let req = Request::get(format!("http://h2c.test/n/{i}"))
                    .body(Full::<Bytes>::default().boxed())
                    .unwrap();
                collect(tx.send_request(req).await.unwrap()).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let a = t.await.unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(a.json()["path"], format!("/n/{i}"));
        }
        assert_eq!(
            backend.accepts.load(Ordering::SeqCst),
            1,
            "one upstream connection"
        );
        dp.shutdown();
    })
    .await
}

#[tokio::test]
async fn a_connection_at_the_server_s_stream_limit_gets_a_sibling() {
    within(async {
        let backend = echo().http2_only().max_concurrent_streams(2).start().await;
        let dp = dataplane(
            vec![(
                "limited.test",
                route(&[backend.addr], upstream(UpstreamProtocol::H2c, None)),
            )],
            CertTable::default(),
        )
        .await;
        let addr = dp.http_addr();
        let burst = |n: usize| async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    tokio::spawn(async move { h1(addr, get("limited.test", "/sleep/300")).await.status })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap(), 200);
            }
        };
        // A burst on a new connection, before the server's SETTINGS are known: no stream beyond
        // its limit is opened (it would be refused), they wait for each other.
        burst(4).await;
        assert_eq!(backend.accepts.load(Ordering::SeqCst), 1);
        // Now the limit is known: more streams than it open another connection.
        burst(6).await;
        assert!(
            backend.accepts.load(Ordering::SeqCst) >= 2,
            "more streams than the server allows on one connection open another"
        );
        dp.shutdown();
    })
    .await
}

#[tokio::test]
async fn h2c_goaway_timeouts_and_connect_retry() {
    within(async {
        // A backend that sends GOAWAY after each connection's first response: the next request
        // goes on a new connection, not to a 502.
        let goaway = h2c_backend(true).await;
        let slow = h2c_backend(false).await;
        let alive = h2c_backend(false).await;
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let timeouts = Policies {
            upstream: upstream(UpstreamProtocol::H2c, None),
            timeouts: UpstreamTimeouts {
                read: Some(Duration::from_millis(300)),
                ..UpstreamTimeouts::default()
            },
            ..Policies::default()
        };
        let dp = dataplane(
            vec![
                (
                    "goaway.test",
                    route(&[goaway.addr], upstream(UpstreamProtocol::H2c, None)),
                ),
                ("slow.test", route_with(&[slow.addr], timeouts)),
                (
                    "retry.test",
                    route(&[dead, alive.addr], upstream(UpstreamProtocol::H2c, None)),
                ),
                ("dead.test", route(&[dead], upstream(UpstreamProtocol::H2c, None))),
            ],
            CertTable::default(),
        )
        .await;

        for i in 0..3 {
            let a = h1(dp.http_addr(), get("goaway.test", &format!("/{i}"))).await;
            assert_eq!(a.status, 200, "request {i}: {:?}", a.body);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(goaway.accepts.load(Ordering::SeqCst), 3);

        // No response head within the route's read timeout: 504.
        let a = h1(dp.http_addr(), get("slow.test", "/sleep/2000")).await;
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);

        // A refused connect is retried once on the next endpoint.
        for _ in 0..4 {
            let a = h1(dp.http_addr(), get("retry.test", "/")).await;
            assert_eq!(a.status, 200);
        }
        let a = h1(dp.http_addr(), get("dead.test", "/")).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);

        let text = metrics(&dp).await;
        assert!(counter(&text, "upstream_timeouts_total") >= 1, "{text}");
        assert!(counter(&text, "upstream_connect_errors_total") >= 2, "{text}");
        dp.shutdown();
    })
    .await
}

#[tokio::test]
async fn https_backend_verification_sni_pooling_and_client_certificates() {
    within(async {
        let ca = new_ca("upstream test ca");
        let (cert, key) = issue(&ca, &["backend.internal"]);
        let backend = tls_backend(server_config(&cert, &key, None, &[b"http/1.1"])).await;
        let mtls_backend = tls_backend(server_config(&cert, &key, Some(&ca), &[b"http/1.1"])).await;
        let (client_cert, client_key) = issue(&ca, &["gantry.client"]);

        let verify = |name: &str| {
            UpstreamTls::new()
                .with_verify(true)
                .with_ca_pem(ca.pem().as_bytes())
                .unwrap()
                .with_name(name)
                .unwrap()
        };
        let https = |tls| upstream(UpstreamProtocol::Https, tls);
        let dp = dataplane(
            vec![
                // proxy-ssl-verify off (the default): any certificate.
                ("off.test", route(&[backend.addr], https(None))),
                // On, with the right CA and name, and SNI.
                (
                    "on.test",
                    route(
                        &[backend.addr],
                        https(Some(verify("backend.internal").with_sni(true))),
                    ),
                ),
                // On, with a name the certificate does not carry.
                (
                    "wrong.test",
                    route(&[backend.addr], https(Some(verify("other.internal")))),
                ),
                // On, without proxy-ssl-name: ingress-nginx's default name, which fails.
                (
                    "noname.test",
                    route(
                        &[backend.addr],
                        https(Some(
                            UpstreamTls::new()
                                .with_verify(true)
                                .with_ca_pem(ca.pem().as_bytes())
                                .unwrap(),
                        )),
                    ),
                ),
                // A backend that requires a client certificate, with and without one.
                (
                    "mtls.test",
                    route(
                        &[mtls_backend.addr],
                        https(Some(
                            verify("backend.internal")
                                .with_client_cert_pem(client_cert.as_bytes(), client_key.as_bytes())
                                .unwrap(),
                        )),
                    ),
                ),
                (
                    "nocert.test",
                    route(&[mtls_backend.addr], https(Some(verify("backend.internal")))),
                ),
            ],
            CertTable::default(),
        )
        .await;

        let a = h1(dp.http_addr(), get("off.test", "/x")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["proto"], "HTTP/1.1");
        assert_eq!(a.json()["host"], "off.test");
        assert_eq!(
            backend.sni.lock().unwrap().last().unwrap(),
            &None,
            "no SNI by default"
        );

        let accepted = backend.accepts.load(Ordering::SeqCst);
        for _ in 0..3 {
            let a = h1(dp.http_addr(), get("on.test", "/y")).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.json()["path"], "/y");
        }
        assert_eq!(
            backend.accepts.load(Ordering::SeqCst),
            accepted + 1,
            "the TLS connection is kept alive and reused"
        );
        assert_eq!(
            backend.sni.lock().unwrap().last().unwrap().as_deref(),
            Some("backend.internal")
        );

        let a = h1(dp.http_addr(), get("wrong.test", "/")).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        let a = h1(dp.http_addr(), get("noname.test", "/")).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);

        let a = h1(dp.http_addr(), get("mtls.test", "/")).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let a = h1(dp.http_addr(), get("nocert.test", "/")).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);

        // The refused certificates failed the connect; the missing client certificate may only
        // show after the handshake (TLS 1.3 sends the server's refusal as an alert).
        let text = metrics(&dp).await;
        assert!(counter(&text, "upstream_connect_errors_total") >= 2, "{text}");
        dp.shutdown();
    })
    .await
}

#[tokio::test]
async fn grpc_through_h2c_and_tls_listeners_to_cleartext_and_tls_backends() {
    within(async {
        let ca = new_ca("upstream test ca");
        let (backend_cert, backend_key) = issue(&ca, &["grpc.internal"]);
        let (plain_addr, plain_reporter) = grpc::health_backend(None).await;
        let (tls_addr, _tls_reporter) = grpc::health_backend(Some((&backend_cert, &backend_key))).await;

        // Gantry's own certificate for the HTTPS listener.
        let (front_cert, front_key) = issue(&ca, &["grpc.test", "grpcs.test"]);
        let mut certs = CertTable::default();
        certs.insert(
            "grpc.test",
            TlsCert::from_pem(front_cert.as_bytes(), front_key.as_bytes()).unwrap(),
        );
        certs.insert(
            "grpcs.test",
            TlsCert::from_pem(front_cert.as_bytes(), front_key.as_bytes()).unwrap(),
        );
        let grpcs = UpstreamTls::new()
            .with_verify(true)
            .with_ca_pem(ca.pem().as_bytes())
            .unwrap()
            .with_name("grpc.internal")
            .unwrap()
            .with_sni(true);
        let dp = dataplane(
            vec![
                // backend-protocol: GRPC
                (
                    "grpc.test",
                    route(&[plain_addr], upstream(UpstreamProtocol::H2c, None)),
                ),
                // backend-protocol: GRPCS, verified
                (
                    "grpcs.test",
                    route(&[tls_addr], upstream(UpstreamProtocol::H2, Some(grpcs))),
                ),
            ],
            certs,
        )
        .await;

        let h2c = |host: &str| {
            GrpcEndpoint::from_shared(format!("http://{}", dp.http_addr()))
                .unwrap()
                .origin(format!("http://{host}").parse().unwrap())
        };
        let tls = |host: &str| {
            GrpcEndpoint::from_shared(format!("https://{}", dp.https_addr()))
                .unwrap()
                .origin(format!("https://{host}").parse().unwrap())
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca.pem()))
                        .domain_name(host.to_string()),
                )
                .unwrap()
        };
        let check = HealthCheckRequest {
            service: String::new(),
        };

        for (what, endpoint) in [
            ("h2c to GRPC", h2c("grpc.test")),
            ("TLS to GRPC", tls("grpc.test")),
            ("h2c to GRPCS", h2c("grpcs.test")),
            ("TLS to GRPCS", tls("grpcs.test")),
        ] {
            let mut client = HealthClient::new(endpoint.connect().await.unwrap());
            // Unary.
            let resp = client
                .check(check.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(resp.into_inner().status(), ServingStatus::Serving, "{what}");
            // A gRPC error status (a trailers-only response) passes as it is.
            let err = client
                .check(HealthCheckRequest {
                    service: "unknown".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::NotFound, "{what}: {err}");
        }

        // Server streaming: Watch sends the current status, then every change.
        for endpoint in [h2c("grpc.test"), tls("grpc.test")] {
            let mut client = HealthClient::new(endpoint.connect().await.unwrap());
            let mut watch = client.watch(check.clone()).await.unwrap().into_inner();
            let first = watch.message().await.unwrap().unwrap();
            assert_eq!(first.status(), ServingStatus::Serving);
            plain_reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let second = watch.message().await.unwrap().unwrap();
            assert_eq!(second.status(), ServingStatus::NotServing);
            plain_reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            let third = watch.message().await.unwrap().unwrap();
            assert_eq!(third.status(), ServingStatus::Serving);
        }
        dp.shutdown();
    })
    .await
}

#[tokio::test]
async fn grpcs_backend_with_a_certificate_gantry_does_not_trust_is_a_502() {
    within(async {
        let ca = new_ca("upstream test ca");
        let other_ca = new_ca("upstream test ca");
        let (cert, key) = issue(&ca, &["grpc.internal"]);
        let (addr, _reporter) = grpc::health_backend(Some((&cert, &key))).await;
        let untrusted = UpstreamTls::new()
            .with_verify(true)
            .with_ca_pem(other_ca.pem().as_bytes())
            .unwrap()
            .with_name("grpc.internal")
            .unwrap();
        let dp = dataplane(
            vec![
                (
                    "bad.test",
                    route(&[addr], upstream(UpstreamProtocol::H2, Some(untrusted))),
                ),
                // Verification off: any certificate.
                ("off.test", route(&[addr], upstream(UpstreamProtocol::H2, None))),
            ],
            CertTable::default(),
        )
        .await;
        let grpc = |host: &str| {
            Request::post("/grpc.health.v1.Health/Check")
                .header("host", host)
                .header("content-type", "application/grpc")
                // An empty HealthCheckRequest: no compression, length 0.
                .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                .unwrap()
        };
        let a = h1(dp.http_addr(), grpc("bad.test")).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        let a = h1(dp.http_addr(), grpc("off.test")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-type"], "application/grpc");
        // An HTTP/1.1 client gets the gRPC status in the chunked trailers only when it asks for
        // them; the message itself is the body: SERVING (1).
        assert_eq!(&a.body[..], &[0, 0, 0, 0, 2, 8, 1]);
        dp.shutdown();
    })
    .await
}
