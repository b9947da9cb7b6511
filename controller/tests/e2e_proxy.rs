//! End-to-end: the real `gantry` binary on loopback, real backend servers, real clients.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gantry_testkit::{gantry, objects::*, *};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes and returns what came back (at most 5 s).
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_are_routed_by_host_and_path_with_forwarding_headers() {
    let (a, b) = (Echo::start("svc-a").await, Echo::start("svc-b").await);
    let g = gantry!()
        .yaml(&[
            service_yaml("svc-a", 80, None, &[a.addr]),
            service_yaml("svc-b", 8080, Some("http"), &[b.addr]),
            ingress_yaml(
                "web",
                &[],
                &[
                    ("a.example", "/", "Prefix", "svc-a", 80),
                    ("a.example", "/b", "Prefix", "svc-b", 8080),
                    ("*.wild.example", "/", "Prefix", "svc-b", 8080),
                ],
            ),
        ])
        .start()
        .await;
    let c = plain_client();

    let r = c
        .get(g.url("/x?q=1"))
        .header("host", "a.example")
        .header("user-agent", "e2e/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("date"), "Date header");
    assert!(r.headers().contains_key("server"), "Server header");
    assert!(r.headers().contains_key("content-length"), "Content-Length kept");
    assert!(!r.headers().contains_key("transfer-encoding"));
    let body = json(r).await;
    assert_eq!(body["service"], "svc-a");
    assert_eq!(body["path"], "/x");
    assert_eq!(body["query"], "q=1");
    assert_eq!(body["proto"], "HTTP/1.1");
    assert_eq!(body["host"], "a.example");
    let h = &body["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "a.example");
    assert_eq!(h["x-forwarded-port"], g.http.port().to_string());
    assert_eq!(h["user-agent"], "e2e/1");
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 32);

    let r = c
        .get(g.url("/b/c"))
        .header("host", "A.Example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(r).await["service"],
        "svc-b",
        "host is case-insensitive and its port ignored"
    );
    let r = c
        .get(g.url("/bc"))
        .header("host", "a.example")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["service"], "svc-a", "/b does not match /bc");
    let r = c
        .get(g.url("/"))
        .header("host", "x.wild.example")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["service"], "svc-b");
    let r = c
        .get(g.url("/"))
        .header("host", "x.y.wild.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a wildcard covers one label only");
    let r = c
        .get(g.url("/"))
        .header("host", "other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers().contains_key("date") && r.headers().contains_key("server"),
        "our own errors get Date and Server"
    );

    // Methods and bodies pass through; the request id is kept when the client sends one.
    let r = c
        .post(g.url("/upload"))
        .header("host", "a.example")
        .body(vec![7u8; 300_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "300000");
    let r = c
        .delete(g.url("/thing"))
        .header("host", "a.example")
        .header("x-request-id", "abc-1")
        .send()
        .await
        .unwrap();
    let body = json(r).await;
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["headers"]["x-request-id"], "abc-1");

    // A 4 MiB download streams through intact.
    let r = c
        .get(g.url("/bytes/4194304"))
        .header("host", "a.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 4_194_304);

    // Paths are normalized once, and the normalized path is what the backend sees.
    let r = c
        .get(g.url("/b/./x/../%7Euser"))
        .header("host", "a.example")
        .send()
        .await
        .unwrap();
    let body = json(r).await;
    assert_eq!(body["service"], "svc-b");
    assert_eq!(body["path"], "/b/~user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_oversized_heads_get_431() {
    let a = Echo::start("svc-a").await;
    let g = gantry!()
        .yaml(&[
            service_yaml("svc-a", 80, None, &[a.addr]),
            ingress_yaml("web", &[], &[("", "/", "Prefix", "svc-a", 80)]),
        ])
        .args(["--max-headers", "20"])
        .start()
        .await;

    let ok = raw_http(g.http, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    for (what, req) in [
        (
            "missing Host",
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        ),
        (
            "Host disagrees with target",
            b"GET http://b/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "escapes the root",
            b"GET /../etc/passwd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "bad percent-encoding",
            b"GET /a%zz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "encoded NUL",
            b"GET /a%00b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "bad host",
            b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let resp = raw_http(g.http, req).await;
        assert_eq!(status_of(&resp), 400, "{what}: {resp}");
    }

    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 0..30 {
        many += &format!("x-h{i}: v\r\n");
    }
    many += "\r\n";
    assert_eq!(
        status_of(&raw_http(g.http, many.as_bytes()).await),
        431,
        "more headers than --max-headers"
    );

    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(70 * 1024)
    );
    assert_eq!(
        status_of(&raw_http(g.http, big.as_bytes()).await),
        431,
        "head larger than --max-header-bytes"
    );

    // The proxy still serves after all of that.
    let ok = raw_http(g.http, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&ok), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_502_503_and_504() {
    let slow = Echo::start("slow").await;
    let closed: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let g = gantry!()
        .yaml(&[
            service_yaml("slow", 80, None, &[slow.addr]),
            service_yaml("dead", 80, None, &[closed]),
            service_yaml("empty", 80, None, &[]),
            ingress_yaml(
                "web",
                &[],
                &[
                    ("e.example", "/slow", "Prefix", "slow", 80),
                    ("e.example", "/dead", "Prefix", "dead", 80),
                    ("e.example", "/empty", "Prefix", "empty", 80),
                    ("e.example", "/missing", "Prefix", "no-such-service", 80),
                ],
            ),
        ])
        .args([
            "--upstream-response-timeout",
            "300ms",
            "--upstream-connect-timeout",
            "1s",
        ])
        .start()
        .await;
    let c = plain_client();
    let get = |p: &str| c.get(g.url(p)).header("host", "e.example").send();
    assert_eq!(get("/slow/sleep/10").await.unwrap().status(), 200);
    assert_eq!(get("/slow/sleep/1500").await.unwrap().status(), 504);
    assert_eq!(get("/dead").await.unwrap().status(), 502);
    assert_eq!(get("/empty").await.unwrap().status(), 503);
    assert_eq!(get("/missing").await.unwrap().status(), 503);
    // The broken backends are reported, and the good route still serves.
    let routes = g.routes().await;
    let reasons: Vec<&str> = routes["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"ServiceNotFound"), "{reasons:?}");
    assert!(reasons.contains(&"NoEndpoints"), "{reasons:?}");
    assert_eq!(get("/slow").await.unwrap().status(), 200);
    let metrics = c
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gantry_upstream_timeouts_total 1"), "{metrics}");
    assert!(
        g.metric_series("gantry_upstream_connect_errors_total")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "the refused connection to /dead is counted: {metrics}"
    );
    let errors = |path: &'static str| {
        let c = c.clone();
        let url = g.url(path);
        async move {
            c.get(url)
                .header("host", "e.example")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // A positive control: the count moves with one more failure.
    let before = g
        .metric_series("gantry_upstream_connect_errors_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(errors("/dead").await, 502);
    assert!(
        g.metric_series("gantry_upstream_connect_errors_total")
            .await
            .unwrap_or(0.0)
            > before
    );
    assert!(metrics.contains("status_class=\"5xx\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_on_another_endpoint() {
    let live = Echo::start("live").await;
    let closed: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let g = gantry!()
        .yaml(&[
            service_yaml("half", 80, None, &[live.addr, closed]),
            ingress_yaml("web", &[], &[("", "/", "Prefix", "half", 80)]),
        ])
        .start()
        .await;
    let c = plain_client();
    for _ in 0..20 {
        let r = c
            .get(g.url("/"))
            .header("host", "r.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "round-robin hits the dead endpoint half the time; the retry saves it"
        );
    }
    // The dead endpoint was really tried, and every request ended at the live one.
    assert!(
        g.metric_series("gantry_upstream_retries_total{reason=\"connect_error\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "no connect_error retry was counted"
    );
    assert_eq!(live.hits.load(std::sync::atomic::Ordering::Relaxed), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_picks_the_certificate_by_sni_and_serves_http2_and_http1() {
    let a = Echo::start("svc-a").await;
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: tls, namespace: default }
spec:
  ingressClassName: gantry
  tls:
    - hosts: [foo.example.com]
      secretName: foo-cert
    - hosts: ["*.wild.example.com"]
      secretName: wild-cert
  rules:
    - host: foo.example.com
      http: { paths: [{ path: /, pathType: Prefix, backend: { service: { name: svc-a, port: { number: 80 } } } }] }
    - host: "*.wild.example.com"
      http: { paths: [{ path: /, pathType: Prefix, backend: { service: { name: svc-a, port: { number: 80 } } } }] }
    - host: plain.example.com
      http: { paths: [{ path: /, pathType: Prefix, backend: { service: { name: svc-a, port: { number: 80 } } } }] }
"#;
    let g = gantry!()
        .yaml(&[
            service_yaml("svc-a", 80, None, &[a.addr]),
            tls_secret_yaml("foo-cert", &["foo.example.com"]),
            tls_secret_yaml("wild-cert", &["*.wild.example.com"]),
            ingress.into(),
        ])
        .start()
        .await;

    for http2 in [true, false] {
        let c = tls_client("foo.example.com", g.https, http2);
        let r = c.get("https://foo.example.com/x").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.version(),
            if http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(served_cert_names(&r), vec!["foo.example.com"]);
        let body = json(r).await;
        assert_eq!(body["proto"], "HTTP/1.1", "upstream is HTTP/1.1");
        assert_eq!(body["host"], "foo.example.com");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");

        let c = tls_client("a.wild.example.com", g.https, http2);
        let r = c.get("https://a.wild.example.com/").send().await.unwrap();
        assert_eq!(
            served_cert_names(&r),
            vec!["*.wild.example.com"],
            "the wildcard certificate"
        );

        // A host without a TLS entry is served with the default certificate.
        let c = tls_client("plain.example.com", g.https, http2);
        let r = c.get("https://plain.example.com/").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            served_cert_names(&r),
            vec!["gantry.invalid"],
            "the generated default certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_tls_host_gets_308_unless_the_ingress_turns_it_off() {
    let a = Echo::start("svc-a").await;
    let tls_ingress = |name: &str, host: &str, redirect: Option<&str>| {
        let ann = redirect
            .map(|v| format!("  annotations: {{ nginx.ingress.kubernetes.io/ssl-redirect: \"{v}\" }}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{ann}spec:\n  ingressClassName: gantry\n  tls: [{{ hosts: [{host}], secretName: cert }}]\n  rules:\n    - host: {host}\n      http: {{ paths: [{{ path: /, pathType: Prefix, backend: {{ service: {{ name: svc-a, port: {{ number: 80 }} }} }} }}] }}\n"
        )
    };
    let g = gantry!()
        .yaml(&[
            service_yaml("svc-a", 80, None, &[a.addr]),
            tls_secret_yaml("cert", &["r.example", "n.example"]),
            tls_ingress("redirects", "r.example", None),
            tls_ingress("no-redirect", "n.example", Some("false")),
        ])
        .start()
        .await;
    let c = plain_client();
    let r = c
        .get(g.url("/a/b?x=1&y=2"))
        .header("host", "r.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "https://r.example/a/b?x=1&y=2");
    let r = c
        .get(g.url("/a"))
        .header("host", "n.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["service"], "svc-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_are_tunnelled_both_ways() {
    let a = Echo::start("ws").await;
    let g = gantry!()
        .yaml(&[
            service_yaml("ws", 80, None, &[a.addr]),
            ingress_yaml("ws", &[], &[("ws.example", "/", "Prefix", "ws", 80)]),
        ])
        .start()
        .await;
    let stream = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.example/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..50 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), msg);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_port_mode_forwards_to_the_node_port_of_ready_nodes() {
    let a = Echo::start("np").await;
    let node = |name: &str, ip: &str, ready: &str| {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{ name: {name} }}\nstatus:\n  addresses: [{{ type: InternalIP, address: \"{ip}\" }}]\n  conditions: [{{ type: Ready, status: \"{ready}\" }}]\n"
        )
    };
    let m = [
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: np, namespace: default }}\nspec:\n  type: NodePort\n  ports: [{{ port: 80, targetPort: 3000, nodePort: {} }}]\n",
            a.addr.port()
        ),
        node("good", "127.0.0.1", "True"),
        // A NotReady node on another loopback address: it would refuse the connection if used.
        node("down", "127.0.0.2", "False"),
        ingress_yaml("np", &[], &[("np.example", "/", "Prefix", "np", 80)]),
    ];
    let g = gantry!()
        .yaml(&m)
        .args(["--backend-mode", "node-port"])
        .start()
        .await;
    let routes = g.routes().await;
    assert_eq!(
        routes["routes"][0]["endpoints"],
        serde_json::json!([a.addr.to_string()]),
        "only the ready node"
    );
    let c = plain_client();
    for _ in 0..4 {
        let r = c
            .get(g.url("/"))
            .header("host", "np.example")
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["service"], "np");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_apply_without_restart_and_a_broken_file_keeps_its_last_good_objects() {
    let (a, b) = (Echo::start("svc-a").await, Echo::start("svc-b").await);
    let g = gantry!()
        .manifest(
            "svc.yaml",
            &(service_yaml("svc-a", 80, None, &[a.addr])
                + "---\n"
                + &service_yaml("svc-b", 80, None, &[b.addr])),
        )
        .manifest(
            "one.yaml",
            &ingress_yaml("one", &[], &[("one.example", "/", "Prefix", "svc-a", 80)]),
        )
        .start()
        .await;
    let c = plain_client();
    let service = |host: &'static str| {
        let c = c.clone();
        let url = g.url("/");
        async move {
            let r = c.get(url).header("host", host).send().await.unwrap();
            if r.status() != 200 {
                return format!("status {}", r.status());
            }
            r.json::<serde_json::Value>().await.unwrap()["service"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(service("one.example").await, "svc-a");

    // A new file is picked up (how fast is the load tests' figure, not this test's).
    g.write_manifest(
        "two.yaml",
        &ingress_yaml("two", &[], &[("two.example", "/", "Prefix", "svc-b", 80)]),
    );
    g.wait_routes("two.example", |r| {
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["host"] == "two.example")
    })
    .await;
    assert_eq!(service("two.example").await, "svc-b");

    // A half-written file is reported and its last good objects stay in force.
    g.write_manifest(
        "two.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {\n  name: tw",
    );
    g.wait_routes("a parse error", |r| {
        r["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "ManifestParseError")
    })
    .await;
    assert_eq!(service("two.example").await, "svc-b");

    // A bad Ingress beside good ones in the same file costs only itself.
    let mixed = ingress_yaml("three", &[], &[("three.example", "/", "Prefix", "svc-a", 80)])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: { name: broken, namespace: default }\nspec: { rules: 42 }\n";
    g.write_manifest("two.yaml", &mixed);
    g.wait_routes("three.example", |r| {
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["host"] == "three.example")
    })
    .await;
    let routes = g.routes().await;
    assert!(
        routes["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "InvalidObject"),
        "{routes:#}"
    );
    assert_eq!(service("three.example").await, "svc-a");
    assert_eq!(service("one.example").await, "svc-a");

    // Removing a file removes its routes.
    std::fs::remove_file(g.dir.join("one.yaml")).unwrap();
    g.wait_routes("one.example gone", |r| {
        !r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["host"] == "one.example")
    })
    .await;
    assert_eq!(service("one.example").await, "status 404 Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_metrics_and_routes() {
    let a = Echo::start("svc-a").await;
    let g = gantry!()
        .yaml(&[
            service_yaml("svc-a", 80, None, &[a.addr]),
            ingress_yaml("web", &[], &[("m.example", "/api", "Exact", "svc-a", 80)]),
        ])
        .start()
        .await;
    let c = plain_client();
    let admin = |p: &str| format!("http://{}{p}", g.admin);
    assert_eq!(c.get(admin("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(admin("/readyz")).send().await.unwrap().status(), 200);
    c.get(g.url("/api"))
        .header("host", "m.example")
        .send()
        .await
        .unwrap();
    let metrics = c
        .get(admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "gantry_requests_total{kind=\"Ingress\",namespace=\"default\",ingress=\"web\",service=\"svc-a\",status_class=\"2xx\"} 1",
        "gantry_request_duration_seconds_bucket",
        "gantry_active_connections",
        "gantry_snapshot_rebuilds_total{result=\"ok\"}",
        "gantry_snapshot_last_success_timestamp_seconds",
        "gantry_routes 1",
        "gantry_endpoints 1",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
    let routes = g.routes().await;
    let r = &routes["routes"][0];
    assert_eq!(r["host"], "m.example");
    assert_eq!(r["path"], "/api");
    assert_eq!(r["path_type"], "Exact");
    assert_eq!(r["backend"], "default/svc-a:80");
    assert_eq!(r["ingress"], "default/web");
    assert_eq!(r["endpoints"], serde_json::json!([a.addr.to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_http1_requests_are_answered_in_order_and_h2c_works_on_the_plain_listener() {
    let (a, b) = (Echo::start("svc-a").await, Echo::start("svc-b").await);
    let g = gantry!()
        .yaml(&[
            service_yaml("svc-a", 80, None, &[a.addr]),
            service_yaml("svc-b", 80, None, &[b.addr]),
            ingress_yaml(
                "p",
                &[],
                &[
                    ("p.example", "/a", "Prefix", "svc-a", 80),
                    ("p.example", "/b", "Prefix", "svc-b", 80),
                ],
            ),
        ])
        .start()
        .await;

    // Three requests in one write; the answers must come back in request order.
    let raw = raw_http(
        g.http,
        b"GET /a/1 HTTP/1.1\r\nHost: p.example\r\n\r\nGET /b/2 HTTP/1.1\r\nHost: p.example\r\n\r\nGET /a/3 HTTP/1.1\r\nHost: p.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 3, "{raw}");
    let order: Vec<usize> = ["\"/a/1\"", "\"/b/2\"", "\"/a/3\""]
        .iter()
        .map(|p| raw.find(p).expect(p))
        .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "answers out of order: {raw}"
    );

    // HTTP/2 with prior knowledge, without TLS.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("p.example", g.http)
        .build()
        .unwrap();
    let r = h2c
        .get(format!("http://p.example:{}/b/x", g.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!(body["service"], "svc-b");
    assert_eq!(body["proto"], "HTTP/1.1", "forwarded upstream as HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_slow_requests_are_not_idle() {
    let slow = Echo::start("slow").await;
    let g = gantry!()
        .yaml(&[
            service_yaml("slow", 80, None, &[slow.addr]),
            ingress_yaml("slow", &[], &[("", "/", "Prefix", "slow", 80)]),
        ])
        .args(["--idle-timeout", "400ms"])
        .start()
        .await;

    // A keep-alive connection that goes quiet is closed by the server.
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: i.example\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive between requests: a second request on it is answered...
    s.write_all(b"GET /x HTTP/1.1\r\nHost: i.example\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "the connection stays open after a response"
    );
    // ...and once it goes quiet, the server closes it.
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "the idle connection was never closed");

    // A request that waits 1.2 s on its backend (three idle timeouts) is not idle.
    let raw = raw_http(
        g.http,
        b"GET /sleep/1200 HTTP/1.1\r\nHost: i.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
}
