//! Tracing end to end, with a real OTLP receiver: an OpenTelemetry Collector (its OTLP receiver
//! and file exporter, built from its Go modules by `controller/testenv/build-otelcol.sh`) takes
//! Gantry's spans over gRPC and over HTTP and writes them to a JSON file that the tests read.
//!
//! The collector is `GANTRY_OTELCOL` (`.ci/test` builds it and sets it). Without it a test says so
//! and passes, unless `GANTRY_REQUIRE_TOOLS` is set, when it fails. Everything binds to 127.0.0.1.
//!
//! The helpers are local and small on purpose (the shared test scaffolding is being moved).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn otelcol() -> Option<PathBuf> {
    match std::env::var_os("GANTRY_OTELCOL") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("GANTRY_REQUIRE_TOOLS").is_some() => {
            panic!("GANTRY_OTELCOL is required (GANTRY_REQUIRE_TOOLS is set): controller/testenv/build-otelcol.sh")
        }
        None => {
            eprintln!("SKIPPED: GANTRY_OTELCOL is not set (controller/testenv/build-otelcol.sh builds it)");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} does not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The collector, its OTLP ports and the file its spans go to.
struct Collector {
    _child: Killed,
    grpc: SocketAddr,
    http: SocketAddr,
    spans: PathBuf,
}

impl Collector {
    async fn start(bin: &Path, dir: &Path) -> Collector {
        let (grpc, http) = (free_port(), free_port());
        let spans = dir.join("spans.jsonl");
        let config = dir.join("otelcol.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:{grpc}\" }}\n      \
                 http: {{ endpoint: \"127.0.0.1:{http}\" }}\n\
                 exporters:\n  file:\n    path: \"{}\"\n    flush_interval: 100ms\n\
                 service:\n  telemetry:\n    metrics: {{ level: none }}\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [file] }}\n",
                spans.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("otelcol.log")).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start otelcol");
        let c = Collector {
            _child: Killed(child),
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            spans,
        };
        wait_listening(c.grpc, "otelcol (gRPC)").await;
        wait_listening(c.http, "otelcol (HTTP)").await;
        c
    }

    /// Every span written so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(doc) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
                let service = attributes(&rs["resource"]["attributes"])
                    .remove("service.name")
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        out.push(Span {
                            service: service.clone(),
                            trace_id: s["traceId"].as_str().unwrap_or("").to_string(),
                            span_id: s["spanId"].as_str().unwrap_or("").to_string(),
                            parent: s["parentSpanId"].as_str().unwrap_or("").to_string(),
                            name: s["name"].as_str().unwrap_or("").to_string(),
                            kind: s["kind"].as_i64().unwrap_or(0),
                            attributes: attributes(&s["attributes"]),
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits until the spans of `trace_id` include `n` spans.
    async fn trace(&self, trace_id: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: {} of {n} spans reached the collector; all spans: {:#?}",
                spans.len(),
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    /// OTLP's `SpanKind`: 2 server, 3 client.
    kind: i64,
    attributes: HashMap<String, String>,
}

/// OTLP JSON attributes as text (`stringValue`, or `intValue`, which OTLP JSON writes as a string).
fn attributes(list: &Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for a in list.as_array().into_iter().flatten() {
        let v = &a["value"];
        let text = v["stringValue"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v["intValue"].as_str().map(str::to_string))
            .or_else(|| v["intValue"].as_i64().map(|n| n.to_string()))
            .unwrap_or_else(|| v.to_string());
        out.insert(a["key"].as_str().unwrap_or("").to_string(), text);
    }
    out
}

/// The `traceparent` of each request the backend got on `/auth`.
type AuthSeen = Arc<Mutex<Vec<Option<String>>>>;

/// A backend that answers 200 with the `traceparent` and `tracestate` it got, as JSON; `/auth`
/// answers 200 too (the external auth service), and its `traceparent` is kept.
async fn backend() -> (SocketAddr, AuthSeen, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = AuthSeen::default();
    let auth_seen = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    if req.uri().path() == "/auth" {
                        seen.lock().unwrap().push(h("traceparent"));
                    }
                    let body = serde_json::json!({
                        "path": req.uri().path(),
                        "traceparent": h("traceparent"),
                        "tracestate": h("tracestate"),
                    });
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string())))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, auth_seen, task)
}

/// `gantry --manifests` on free loopback ports, killed when dropped.
struct Gantry {
    _child: Killed,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Gantry {
    async fn start(dir: &Path, extra: &[&str]) -> Gantry {
        let (http, https, admin) = (free_port(), free_port(), free_port());
        let at = |p: u16| format!("127.0.0.1:{p}");
        let log = std::fs::File::create(dir.join("gantry.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("--manifests")
            .arg(dir.join("manifests"))
            .args([
                "--http-addr",
                &at(http),
                "--https-addr",
                &at(https),
                "--admin-addr",
                &at(admin),
            ])
            .args(["--access-log=false", "--worker-threads", "1"])
            .args(extra)
            .env_remove("GANTRY_MANIFESTS")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gantry");
        let g = Gantry {
            _child: Killed(child),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client()
                .get(format!("http://{}/readyz", g.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "gantry not ready; log:\n{}",
                std::fs::read_to_string(dir.join("gantry.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET / on `host`, with these request headers; the status and the backend's JSON.
    async fn get(&self, host: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = client()
            .get(format!("http://{}/", self.http))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request to gantry");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The value of a metric sample line (name with labels, as written) on `/metrics`, 0 if absent.
    async fn metric(&self, sample: &str) -> f64 {
        let text = client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The manifests: Service `echo` on the backend, and three Ingresses on it: `traced` (with
/// external auth against the backend's `/auth`), `untrusting` (starts its own traces) and `quiet`
/// (not traced).
fn write_manifests(dir: &Path, backend: SocketAddr) {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).unwrap();
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: echo, namespace: default }}\n\
         spec:\n  ports: [{{ port: 80, targetPort: {port} }}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-0\n  namespace: default\n  \
         labels: {{ kubernetes.io/service-name: echo }}\naddressType: IPv4\nports: [{{ port: {port} }}]\n\
         endpoints:\n  - addresses: [\"{ip}\"]\n    conditions: {{ ready: true }}\n",
        port = backend.port(),
        ip = backend.ip()
    );
    let p = "nginx.ingress.kubernetes.io/";
    let auth = format!("http://{backend}/auth");
    for (name, host, annotations) in [
        (
            "traced",
            "traced.example",
            vec![("enable-opentelemetry", "true"), ("auth-url", auth.as_str())],
        ),
        (
            "untrusting",
            "fresh.example",
            vec![
                ("enable-opentelemetry", "true"),
                ("opentelemetry-trust-incoming-span", "false"),
            ],
        ),
        ("quiet", "quiet.example", vec![("enable-opentelemetry", "false")]),
    ] {
        s += &format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n"
        );
        for (k, v) in annotations {
            s += &format!("    {p}{k}: \"{v}\"\n");
        }
        s += &format!(
            "spec:\n  ingressClassName: gantry\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        \
             pathType: Prefix\n        backend:\n          service: {{ name: echo, port: {{ number: 80 }} }}\n"
        );
    }
    std::fs::write(m.join("all.yaml"), s).unwrap();
}

fn traceparent_of(body: &Value) -> (String, String) {
    let tp = body["traceparent"]
        .as_str()
        .expect("the backend got a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    assert_eq!(parts[3], "01", "sampled: {tp}");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_collector_and_continue_the_clients_trace() {
    let Some(bin) = otelcol() else { return };
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&bin, dir.path()).await;
    let (backend, auth_seen, _task) = backend().await;
    write_manifests(dir.path(), backend);
    let endpoint = format!("http://{}", collector.grpc);
    let gantry = Gantry::start(
        dir.path(),
        &["--otlp-endpoint", &endpoint, "--trace-sampling-ratio", "1"],
    )
    .await;

    // A traced route continues the client's trace; the backend's parent is Gantry's upstream span.
    let incoming = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (status, body) = gantry
        .get(
            "traced.example",
            &[("traceparent", &incoming), ("tracestate", "vendor=7")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (sent_trace, sent_parent) = traceparent_of(&body);
    assert_eq!(sent_trace, TRACE_ID);
    assert_ne!(sent_parent, CLIENT_SPAN);
    assert_eq!(body["tracestate"], "vendor=7");

    let spans = collector.trace(TRACE_ID, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    let upstream = spans
        .iter()
        .find(|s| s.attributes.get("gantry.span").map(String::as_str) == Some("upstream"))
        .expect("an upstream span");
    let auth = spans
        .iter()
        .find(|s| s.attributes.get("gantry.span").map(String::as_str) == Some("external_auth"))
        .expect("an external auth span");
    // Structure: client → server span → (external auth, upstream).
    assert_eq!(server.parent, CLIENT_SPAN);
    assert_eq!(upstream.parent, server.span_id);
    assert_eq!(auth.parent, server.span_id);
    assert_eq!(
        upstream.span_id, sent_parent,
        "the backend's parent is the upstream span"
    );
    assert_eq!((upstream.kind, auth.kind), (3, 3));
    assert!(spans.iter().all(|s| s.service == "gantry"), "{spans:#?}");
    // Attributes: OpenTelemetry's HTTP conventions, and the route, Service and endpoint.
    let a = &server.attributes;
    assert_eq!(server.name, "GET /");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/"),
        ("http.response.status_code", "200"),
        ("url.scheme", "http"),
        ("url.path", "/"),
        ("server.address", "traced.example"),
        ("client.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("gantry.route.kind", "Ingress"),
        ("k8s.namespace.name", "default"),
        ("gantry.route.name", "traced"),
        ("gantry.service.name", "echo"),
        ("gantry.service.port", "80"),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(value),
            "server span {key}: {a:#?}"
        );
    }
    assert_eq!(a.get("gantry.endpoint"), Some(&backend.to_string()));
    let u = &upstream.attributes;
    let port = backend.port().to_string();
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("network.peer.address", "127.0.0.1"),
        ("network.peer.port", port.as_str()),
        ("gantry.service.name", "echo"),
        ("gantry.service.namespace", "default"),
    ] {
        assert_eq!(
            u.get(key).map(String::as_str),
            Some(value),
            "upstream span {key}: {u:#?}"
        );
    }
    assert_eq!(
        auth.attributes.get("gantry.ext_auth.result").map(String::as_str),
        Some("allowed")
    );
    assert_eq!(
        auth.attributes.get("url.full"),
        Some(&format!("http://{backend}/auth"))
    );
    // The auth service's parent is the external auth span.
    let auth_parent = format!("00-{TRACE_ID}-{}-01", auth.span_id);
    assert_eq!(
        auth_seen.lock().unwrap().first().cloned().flatten(),
        Some(auth_parent)
    );

    // A route that does not trust incoming spans starts a trace of its own.
    let (status, body) = gantry.get("fresh.example", &[("traceparent", &incoming)]).await;
    assert_eq!(status, 200);
    let (fresh_trace, _) = traceparent_of(&body);
    assert_ne!(fresh_trace, TRACE_ID);
    let fresh = collector.trace(&fresh_trace, 2).await;
    let server = fresh.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(server.parent, "", "a new trace has no parent: {server:#?}");
    assert_eq!(body["tracestate"], Value::Null);

    // A route that is not traced passes the client's context on untouched, and makes no span.
    let quiet_trace = "0af7651916cd43dd8448eb211c80319c";
    let quiet = format!("00-{quiet_trace}-b7ad6b7169203331-01");
    let (status, body) = gantry.get("quiet.example", &[("traceparent", &quiet)]).await;
    assert_eq!(status, 200);
    assert_eq!(body["traceparent"], quiet.as_str());

    // Exported spans are counted, none dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gantry.metric("gantry_trace_spans_exported_total").await < 5.0 {
        assert!(
            Instant::now() < deadline,
            "gantry_trace_spans_exported_total stays below 5"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        collector.spans().iter().all(|s| s.trace_id != quiet_trace),
        "the quiet route made spans"
    );
    assert_eq!(
        gantry
            .metric("gantry_trace_spans_dropped_total{reason=\"export_failed\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_otlp_http_too() {
    let Some(bin) = otelcol() else { return };
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&bin, dir.path()).await;
    let (backend, _auth, _task) = backend().await;
    write_manifests(dir.path(), backend);
    let endpoint = format!("http://{}/v1/traces", collector.http);
    let gantry = Gantry::start(
        dir.path(),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "http",
            "--trace-sampling-ratio",
            "1",
        ],
    )
    .await;
    let (status, body) = gantry.get("fresh.example", &[]).await;
    assert_eq!(status, 200);
    let (trace, parent) = traceparent_of(&body);
    let spans = collector.trace(&trace, 2).await;
    let upstream = spans.iter().find(|s| s.kind == 3).unwrap();
    assert_eq!(upstream.span_id, parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_only_dropped_spans() {
    // No collector: the endpoint is a port nothing listens on. Requests still succeed, promptly,
    // and the spans are counted as dropped.
    let dir = tempfile::tempdir().unwrap();
    let (backend, _auth, _task) = backend().await;
    write_manifests(dir.path(), backend);
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let gantry = Gantry::start(
        dir.path(),
        &["--otlp-endpoint", &endpoint, "--trace-sampling-ratio", "1"],
    )
    .await;
    let started = Instant::now();
    for _ in 0..100 {
        let (status, body) = gantry.get("fresh.example", &[]).await;
        assert_eq!(status, 200);
        traceparent_of(&body);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "100 requests took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = gantry
            .metric("gantry_trace_spans_dropped_total{reason=\"export_failed\"}")
            .await
            + gantry
                .metric("gantry_trace_spans_dropped_total{reason=\"queue_full\"}")
                .await;
        if dropped >= 200.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {dropped} of 200 spans counted as dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gantry.metric("gantry_trace_spans_exported_total").await, 0.0);
}
