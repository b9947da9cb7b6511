//! Canary routing and cookie session affinity through the real data plane: two backends (the main
//! one with two endpoints, the canary with one), each the test kit's echo backend (which names
//! itself), and hand-built snapshots published to a running `Dataplane`.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use gantry_proxy::{
    policy::{Affinity, AffinityMode, Canary, HashBy},
    Backend, BackendId, Dataplane, Endpoint, HostMatch, PathMatch, Policies, ProxyConfig, Route, RouteSource,
    RouteTableBuilder, Snapshot,
};
use gantry_testkit::{Echo, Seen};
use http::{header, HeaderName, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A backend endpoint (the kit's echo backend, which names itself), serving until the test ends.
async fn endpoint(name: &'static str) -> SocketAddr {
    Echo::start(name).await.detach()
}

fn config() -> ProxyConfig {
    ProxyConfig {
        access_log: false,
        ..ProxyConfig::default()
    }
}

fn backend(service: &str, addrs: &[SocketAddr]) -> Arc<Backend> {
    let id = BackendId {
        namespace: "default".into(),
        service: service.into(),
        port: "80".into(),
    };
    Arc::new(Backend::new(
        id,
        addrs.iter().map(|&addr| Endpoint { addr }).collect(),
    ))
}

/// A snapshot with one route, `/` on every host, with these policies. `extra` adds a route on
/// another path, to make an otherwise equal snapshot different.
fn snapshot(main: &Arc<Backend>, policies: Policies, extra: bool) -> Snapshot {
    let source = RouteSource {
        kind: gantry_proxy::SourceKind::Ingress,
        namespace: "default".into(),
        name: "web".into(),
    };
    let mut b = RouteTableBuilder::new();
    b.add(
        HostMatch::Any,
        Route {
            path: PathMatch::Prefix("/".into()),
            conditions: None,
            backend: main.clone(),
            source: source.clone(),
            policies: policies.into(),
        },
    )
    .unwrap();
    if extra {
        b.add(
            HostMatch::Any,
            Route {
                path: PathMatch::Prefix("/other".into()),
                conditions: None,
                backend: main.clone(),
                source,
                policies: Default::default(),
            },
        )
        .unwrap();
    }
    Snapshot {
        routes: b.build(),
        address_routes: Vec::new(),
        config: Arc::new(config()),
        ..Default::default()
    }
}

async fn start() -> Dataplane {
    Dataplane::builder(config()).workers(2).start().await.unwrap()
}

/// A keep-alive HTTP/1.1 connection to the data plane.
async fn connect(dp: &Dataplane) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(dp.http_addr()).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// The status, the body (the name of the endpoint that answered) and the `Set-Cookie`, if any.
async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    headers: &[(&str, &str)],
) -> (http::StatusCode, String, Option<String>) {
    let mut req = Request::get("/").header(header::HOST, "example.test");
    for (k, v) in headers {
        req = req.header(HeaderName::from_bytes(k.as_bytes()).unwrap(), *v);
    }
    sender.ready().await.unwrap();
    let resp = sender
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let name = match serde_json::from_slice::<Seen>(&body) {
        Ok(seen) => seen.service,
        Err(_) => String::from_utf8(body.to_vec()).unwrap(),
    };
    (status, name, cookie)
}

/// [`send`], for a request that must succeed.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let (status, body, cookie) = send(sender, headers).await;
    assert_eq!(status, 200, "{body}");
    (body, cookie)
}

/// The `name=value` of a `Set-Cookie`, to send back as `Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Whether `hits` of `n` draws is within the 99% two-sided binomial bound around `p`.
fn within_99(hits: usize, n: usize, p: f64) -> bool {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    (hits as f64 - mean).abs() <= 2.576 * sd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weight_splits_within_a_binomial_bound() {
    let (a, b, c) = (
        endpoint("main-a").await,
        endpoint("main-b").await,
        endpoint("canary").await,
    );
    let main = backend("web", &[a, b]);
    let canary = Canary {
        weight: 30,
        ..Canary::new(backend("web-canary", &[c]))
    };
    let dp = start().await;
    let policies = Policies {
        canary: Some(Arc::new(canary)),
        ..Policies::default()
    };
    assert!(dp.publish(snapshot(&main, policies, false)));
    let mut conn = connect(&dp).await;

    // 99% two-sided bound on each sample; a second, independent sample is drawn only if the
    // first falls outside, so a correct split fails this test about once in 10,000 runs.
    let n = 2000;
    let mut samples = Vec::new();
    for _ in 0..2 {
        let mut to_canary = 0;
        for _ in 0..n {
            let (body, cookie) = get(&mut conn, &[]).await;
            assert!(cookie.is_none(), "no affinity, no cookie");
            match body.as_str() {
                "canary" => to_canary += 1,
                "main-a" | "main-b" => {}
                other => panic!("unexpected body {other:?}"),
            }
        }
        samples.push(to_canary);
        if within_99(to_canary, n, 0.3) {
            break;
        }
    }
    assert!(
        samples.iter().any(|&hits| within_99(hits, n, 0.3)),
        "canary hits of {n}: {samples:?}, expected about {}",
        n * 3 / 10
    );
    dp.shutdown();
    dp.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_header_always_and_never() {
    let (a, c) = (endpoint("main").await, endpoint("canary").await);
    let main = backend("web", &[a]);
    let dp = start().await;
    for weight in [0, 100] {
        let canary = Canary {
            by_header: Some(HeaderName::from_static("x-canary")),
            by_cookie: Some("canary".into()),
            weight,
            ..Canary::new(backend("web-canary", &[c]))
        };
        let policies = Policies {
            canary: Some(Arc::new(canary)),
            ..Policies::default()
        };
        dp.publish(snapshot(&main, policies, false));
        let mut conn = connect(&dp).await;
        let weighted = if weight == 100 { "canary" } else { "main" };
        for _ in 0..20 {
            assert_eq!(get(&mut conn, &[("x-canary", "always")]).await.0, "canary");
            assert_eq!(get(&mut conn, &[("X-Canary", "never")]).await.0, "main");
            // The header wins over the cookie.
            let h = [("x-canary", "never"), ("cookie", "canary=always")];
            assert_eq!(get(&mut conn, &h).await.0, "main");
            // Any other value falls through to the cookie, then the weight.
            let h = [("x-canary", "maybe"), ("cookie", "canary=always")];
            assert_eq!(get(&mut conn, &h).await.0, "canary");
            assert_eq!(get(&mut conn, &[("x-canary", "maybe")]).await.0, weighted);
            assert_eq!(get(&mut conn, &[]).await.0, weighted);
        }
    }

    // A canary without endpoints gets nothing: every request goes to the main backend.
    let canary = Canary {
        by_header: Some(HeaderName::from_static("x-canary")),
        weight: 100,
        ..Canary::new(backend("web-canary", &[]))
    };
    let policies = Policies {
        canary: Some(Arc::new(canary)),
        ..Policies::default()
    };
    dp.publish(snapshot(&main, policies, false));
    let mut conn = connect(&dp).await;
    assert_eq!(get(&mut conn, &[("x-canary", "always")]).await.0, "main");
    assert_eq!(get(&mut conn, &[]).await.0, "main");

    // And a main backend without endpoints answers 503 whatever the canary would say (ingress-nginx
    // has no balancer for it to ask).
    let canary = Canary {
        by_header: Some(HeaderName::from_static("x-canary")),
        weight: 100,
        ..Canary::new(backend("web-canary", &[c]))
    };
    let policies = Policies {
        canary: Some(Arc::new(canary)),
        ..Policies::default()
    };
    dp.publish(snapshot(&backend("web", &[]), policies, false));
    let mut conn = connect(&dp).await;
    assert_eq!(send(&mut conn, &[("x-canary", "always")]).await.0, 503);
    dp.shutdown();
    dp.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_hold_across_a_publish_that_keeps_the_endpoint() {
    let (a, b) = (endpoint("main-a").await, endpoint("main-b").await);
    let main = backend("web", &[a, b]);
    let dp = start().await;
    for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
        let affinity = Arc::new(Affinity {
            mode,
            cookie_name: "SERVERID".into(),
            ..Affinity::default()
        });
        let policies = Policies {
            affinity: Some(affinity.clone()),
            ..Policies::default()
        };
        dp.publish(snapshot(&main, policies.clone(), false));

        // Sessions, each on its own connection (the two workers both serve them).
        let mut sessions = Vec::new();
        for _ in 0..8 {
            let mut conn = connect(&dp).await;
            let (first, set) = get(&mut conn, &[]).await;
            let set = set.expect("a new session gets a cookie");
            assert!(set.starts_with("SERVERID="), "{set}");
            assert!(set.contains("; Path=/; HttpOnly"), "{set}");
            assert!(
                !set.contains("127.0.0.1"),
                "the address is not in the cookie: {set}"
            );
            sessions.push((first, cookie_pair(&set)));
        }
        let check = |sessions: &[(String, String)]| {
            let sessions = sessions.to_vec();
            let dp = &dp;
            async move {
                for (first, cookie) in &sessions {
                    for _ in 0..4 {
                        let mut conn = connect(dp).await;
                        let (body, set) = get(&mut conn, &[("cookie", cookie.as_str())]).await;
                        assert_eq!(&body, first, "{mode:?}: the session stays on its endpoint");
                        assert!(set.is_none(), "a valid cookie is not set again: {set:?}");
                    }
                }
            }
        };
        check(&sessions).await;

        // A new snapshot (another route added) keeps both endpoints: sessions stay.
        assert!(dp.publish(snapshot(&main, policies.clone(), true)));
        check(&sessions).await;

        // Persistent sessions also stay when an endpoint is added.
        if mode == AffinityMode::Persistent {
            let c = endpoint("main-c").await;
            let bigger = backend("web", &[a, b, c]);
            assert!(dp.publish(snapshot(&bigger, policies.clone(), false)));
            check(&sessions).await;

            // A session whose endpoint is removed moves, and gets a new cookie.
            let only_b = backend("web", &[b]);
            assert!(dp.publish(snapshot(&only_b, policies.clone(), false)));
            for (first, cookie) in &sessions {
                let mut conn = connect(&dp).await;
                let (body, set) = get(&mut conn, &[("cookie", cookie.as_str())]).await;
                assert_eq!(body, "main-b");
                if first == "main-a" {
                    let set = set.expect("a moved session gets a new cookie");
                    assert_ne!(cookie_pair(&set), *cookie);
                } else {
                    assert!(set.is_none());
                }
            }
        }
    }
    dp.shutdown();
    dp.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_canary_served_stays_on_the_canary() {
    // ingress-nginx's e2e "always routes traffic to canary if first request was affinitized to
    // canary": weight 1%, a forced request sets the canary's cookie, and that cookie keeps the
    // user on the canary.
    let (a, c) = (endpoint("main").await, endpoint("canary").await);
    let main = backend("web", &[a]);
    let affinity = Arc::new(Affinity {
        cookie_name: "aff".into(),
        ..Affinity::default()
    });
    let canary = Canary {
        by_header: Some(HeaderName::from_static("forcecanary")),
        header_value: Some(http::HeaderValue::from_static("yes")),
        weight: 1,
        affinity: Some(affinity.clone()),
        ..Canary::new(backend("web-canary", &[c]))
    };
    let policies = Policies {
        canary: Some(Arc::new(canary)),
        affinity: Some(affinity),
        ..Policies::default()
    };
    let dp = start().await;
    dp.publish(snapshot(&main, policies, false));
    let mut conn = connect(&dp).await;
    let (body, set) = get(&mut conn, &[("ForceCanary", "yes")]).await;
    assert_eq!(body, "canary");
    let canary_cookie = cookie_pair(&set.unwrap());
    for _ in 0..50 {
        let (body, _) = get(&mut conn, &[("cookie", canary_cookie.as_str())]).await;
        assert_eq!(body, "canary");
    }
    // And a session of the main backend stays there even when the header asks for the canary.
    let (body, set) = get(&mut conn, &[("ForceCanary", "no")]).await;
    let main_cookie = if body == "main" {
        cookie_pair(&set.unwrap())
    } else {
        // The 1% draw went to the canary; ask again until a main session exists.
        let mut cookie = None;
        for _ in 0..1000 {
            let (body, set) = get(&mut conn, &[]).await;
            if body == "main" {
                cookie = set.map(|s| cookie_pair(&s));
                break;
            }
        }
        cookie.unwrap()
    };
    for _ in 0..20 {
        let h = [("cookie", main_cookie.as_str()), ("ForceCanary", "yes")];
        assert_eq!(get(&mut conn, &h).await.0, "main");
    }
    dp.shutdown();
    dp.join().await;
}

#[test]
fn the_route_table_keeps_the_canary_s_endpoints_and_key() {
    // Otherwise every worker would prune the canary's pools and balancer state on each new
    // snapshot.
    let main = backend("web", &["10.0.0.1:80".parse().unwrap()]);
    let canary_backend = backend("web-canary", &["10.0.0.9:80".parse().unwrap()]);
    let policies = Policies {
        canary: Some(Arc::new(Canary::new(canary_backend.clone()))),
        ..Policies::default()
    };
    let s = snapshot(&main, policies, false);
    assert_eq!(
        s.routes.addresses(),
        &["10.0.0.1:80".parse().unwrap(), "10.0.0.9:80".parse().unwrap()]
    );
    assert!(s.routes.backend_keys().contains(&canary_backend.key()));
    assert!(s.routes.backend_keys().contains(&main.key()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hash_by_sends_one_key_to_one_endpoint() {
    // ingress-nginx's e2e "should connect to the same pod" (`upstream-hash-by: $request_uri`),
    // here keyed by a header so that one path can carry many keys.
    let (a, b, c) = (endpoint("a").await, endpoint("b").await, endpoint("c").await);
    let main = backend("web", &[a, b, c]);
    let policies = Policies {
        hash_by: Some(HashBy::Header(HeaderName::from_static("x-user"))),
        ..Policies::default()
    };
    let dp = start().await;
    dp.publish(snapshot(&main, policies, false));
    let mut seen = std::collections::BTreeSet::new();
    for user in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] {
        let mut conn = connect(&dp).await;
        let (first, _) = get(&mut conn, &[("x-user", user)]).await;
        for _ in 0..5 {
            let mut conn = connect(&dp).await;
            assert_eq!(get(&mut conn, &[("x-user", user)]).await.0, first, "user {user}");
        }
        seen.insert(first);
    }
    assert!(seen.len() > 1, "keys spread over the endpoints: {seen:?}");
    dp.shutdown();
    dp.join().await;
}
