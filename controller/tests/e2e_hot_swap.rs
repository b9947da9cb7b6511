//! Hot swap under load: manifests rewritten many times (routes, endpoints, certificates) while
//! HTTP/1.1 keep-alive, HTTP/2 and WebSocket clients keep going. No request may fail or be misrouted.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use gantry_testkit::{gantry, objects::*, *};

const REWRITES: usize = 30;

fn manifests(round: usize, a1: &Echo, a2: &Echo, b: &Echo, c: &Echo, certs: &[String; 2]) -> String {
    // Endpoints of svc-a cycle through [a1], [a2], [a1, a2]; /churn moves between svc-b and svc-c;
    // a varying set of extra hosts changes the route table's shape; the certificate rotates.
    let a_eps: Vec<_> = match round % 3 {
        0 => vec![a1.addr],
        1 => vec![a2.addr],
        _ => vec![a1.addr, a2.addr],
    };
    let churn = if round % 2 == 0 { "svc-b" } else { "svc-c" };
    let mut extra = String::new();
    for i in 0..(round % 5) * 3 {
        extra += &format!(
            "    - host: extra-{i}.example\n      http: {{ paths: [{{ path: /r{round}, pathType: Prefix, backend: {{ service: {{ name: svc-b, port: {{ number: 80 }} }} }} }}] }}\n"
        );
    }
    [
        service_yaml("svc-a", 80, None, &a_eps),
        service_yaml("svc-b", 80, None, &[b.addr]),
        service_yaml("svc-c", 80, None, &[c.addr]),
        certs[round % 2].clone(),
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: swap\n  namespace: default\n  annotations: {{ nginx.ingress.kubernetes.io/ssl-redirect: \"false\" }}\n\
             spec:\n  ingressClassName: gantry\n  tls: [{{ hosts: [s.example], secretName: s-cert }}]\n  rules:\n\
             \x20   - host: s.example\n      http:\n        paths:\n\
             \x20         - {{ path: /, pathType: Prefix, backend: {{ service: {{ name: svc-a, port: {{ number: 80 }} }} }} }}\n\
             \x20         - {{ path: /churn, pathType: Prefix, backend: {{ service: {{ name: {churn}, port: {{ number: 80 }} }} }} }}\n{extra}"
        ),
    ]
    .join("---\n")
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    misrouted: AtomicUsize,
}

async fn check(tally: &Tally, resp: reqwest::Result<reqwest::Response>, allowed: &[&str]) {
    match resp {
        Ok(r) if r.status() == 200 => match r.json::<serde_json::Value>().await {
            Ok(body) if allowed.contains(&body["service"].as_str().unwrap_or("")) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(body) => {
                eprintln!("misrouted: {body}");
                tally.misrouted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("body failed: {e}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
        },
        Ok(r) => {
            eprintln!("status {}", r.status());
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            eprintln!("request failed: {e:?}");
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_routes_endpoints_and_certificates_under_load_fails_no_request() {
    let (a1, a2) = (Echo::start("svc-a").await, Echo::start("svc-a").await);
    let (b, c) = (Echo::start("svc-b").await, Echo::start("svc-c").await);
    // Two different certificates for s.example, told apart by a second name: the rotation is
    // seen by what the listener serves, not assumed.
    let certs = [
        tls_secret_yaml("s-cert", &["s.example", "even.s.example"]),
        tls_secret_yaml("s-cert", &["s.example", "odd.s.example"]),
    ];
    let ws_backend = Echo::start("ws").await;
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), "all.yaml", &manifests(0, &a1, &a2, &b, &c, &certs));
    write_manifest(
        dir.path(),
        "ws.yaml",
        &(service_yaml("ws", 80, None, &[ws_backend.addr])
            + "---\n"
            + &ingress_yaml("ws", &[], &[("ws.example", "/", "Prefix", "ws", 80)])),
    );
    let g = gantry!()
        .manifests(dir.path())
        .args(["--access-log=false"])
        .start()
        .await;
    let gen0 = g.generation().await;
    assert!(
        serves_cert(g.https, "even.s.example").await,
        "the first certificate is served"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    // HTTP/1.1 keep-alive clients on the plain listener.
    for _ in 0..4 {
        let (stop, tally, url) = (stop.clone(), tally.clone(), g.url("/"));
        let client = reqwest::Client::builder()
            .http1_only()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        tasks.push(tokio::spawn(async move {
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                check(
                    &tally,
                    client.get(&url).header("host", "s.example").send().await,
                    &["svc-a"],
                )
                .await;
            }
        }));
    }
    // HTTP/2 over TLS, one connection each, many streams.
    for _ in 0..2 {
        let (stop, tally) = (stop.clone(), tally.clone());
        let client = tls_client("s.example", g.https, true);
        tasks.push(tokio::spawn(async move {
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (x, y) = tokio::join!(
                    client.get("https://s.example/").send(),
                    client.get("https://s.example/churn").send()
                );
                check(&tally, x, &["svc-a"]).await;
                check(&tally, y, &["svc-b", "svc-c"]).await;
            }
        }));
    }
    // A WebSocket held open across every swap.
    let stream = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://ws.example/ws", stream)
        .await
        .unwrap();

    for round in 1..=REWRITES {
        tokio::time::sleep(Duration::from_millis(150)).await;
        write_manifest(
            dir.path(),
            "all.yaml",
            &manifests(round, &a1, &a2, &b, &c, &certs),
        );
        if round == 1 {
            // The certificate really rotates (each later round swaps it again).
            assert!(
                serves_cert(g.https, "odd.s.example").await,
                "the rotated certificate is served"
            );
        }
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!("r{round}")))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            echoed.into_text().unwrap().as_str(),
            format!("r{round}"),
            "the WebSocket survives swaps"
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let (ok, failed, misrouted) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.misrouted.load(Ordering::Relaxed),
    );
    let swaps = g.generation().await - gen0;
    eprintln!("requests ok={ok} failed={failed} misrouted={misrouted} swaps={swaps}");
    assert_eq!(failed, 0, "no request may fail during swaps");
    assert_eq!(misrouted, 0, "no request may be misrouted during swaps");
    assert!(ok > 500, "the load really ran: {ok} requests");
    assert!(
        swaps >= 10,
        "the snapshot really changed many times: {swaps} swaps"
    );
    // Both endpoints of svc-a served, so endpoint changes took effect.
    assert!(a1.hits.load(Ordering::Relaxed) > 0 && a2.hits.load(Ordering::Relaxed) > 0);
    // The final state is what is served: round REWRITES is even → /churn is svc-b.
    let client = plain_client();
    let r = client
        .get(g.url("/churn"))
        .header("host", "s.example")
        .send()
        .await
        .unwrap();
    let expected = if REWRITES % 2 == 0 { "svc-b" } else { "svc-c" };
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["service"], expected);
    let marker = if REWRITES % 2 == 0 {
        "even.s.example"
    } else {
        "odd.s.example"
    };
    assert!(
        serves_cert(g.https, marker).await,
        "the last certificate is served"
    );
}

/// Whether a new TLS connection to `https` for s.example is soon (within 5 s) served the
/// certificate that also names `marker`.
async fn serves_cert(https: std::net::SocketAddr, marker: &str) -> bool {
    for _ in 0..100 {
        let c = tls_client("s.example", https, false);
        if let Ok(r) = c.get("https://s.example/").send().await {
            if served_cert_names(&r).iter().any(|n| n == marker) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
