//! Tracing end to end, with a real OTLP receiver: an OpenTelemetry Collector (its OTLP receiver
//! and file exporter, built from its Go modules by `controller/testenv/build-otelcol.sh`) takes
//! Gantry's spans over gRPC and over HTTP and writes them to a JSON file that the tests read.
//!
//! The collector is `GANTRY_OTELCOL` (`.ci/test` builds it and sets it). Without it a test says so
//! and passes, unless `GANTRY_REQUIRE_TOOLS` is set, when it fails. Everything binds to 127.0.0.1.
//!
//! Gantry, the backend (an [`Echo`], which also plays the external auth service on `/auth` and
//! records the `traceparent` it got there), the manifests, the client and the metrics come from
//! the test kit; only the collector harness is local.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gantry_testkit::{gantry, objects::*, *};
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn otelcol() -> Option<PathBuf> {
    tool_or(
        "otelcol-gantry",
        "GANTRY_OTELCOL",
        "controller/testenv/build-otelcol.sh builds it",
    )
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

/// Gantry with the manifests: Service `echo` on the backend, and three Ingresses on it: `traced`
/// (with external auth against the backend's `/auth`), `untrusting` (starts its own traces) and
/// `quiet` (not traced); `--access-log=false --worker-threads 1` and `extra`.
async fn start_gantry(backend: SocketAddr, extra: &[&str]) -> Gantry {
    let p = "nginx.ingress.kubernetes.io/";
    let auth = format!("http://{backend}/auth");
    let mut docs = vec![service_yaml("echo", 80, None, &[backend])];
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
        let annotations: Vec<(String, &str)> = annotations
            .into_iter()
            .map(|(k, v)| (format!("{p}{k}"), v))
            .collect();
        let annotations: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        docs.push(ingress_yaml(
            name,
            &annotations,
            &[(host, "/", "Prefix", "echo", 80)],
        ));
    }
    gantry!()
        .yaml(&docs)
        .args(["--access-log=false", "--worker-threads", "1"])
        .args(extra)
        .start()
        .await
}

/// GET / on `host`, with these request headers; the status and the backend's JSON.
async fn get(gantry: &Gantry, host: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = plain_client().get(gantry.url("/")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request to gantry");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The value of a metric series (name with labels, as exposed) on `/metrics`, 0 if absent.
async fn metric(gantry: &Gantry, series: &str) -> f64 {
    gantry.metric_series(series).await.unwrap_or(0.0)
}

/// The `traceparent` of the first request the backend got on `/auth` (the external auth call).
fn auth_traceparent(backend: &Echo) -> Option<String> {
    backend
        .requests()
        .into_iter()
        .find(|r| r.path == "/auth")
        .and_then(|r| r.header("traceparent").first().map(|v| v.to_string()))
}

/// The request header `name` the backend got, from its JSON answer (`null` when absent).
fn header<'a>(body: &'a Value, name: &str) -> &'a Value {
    &body["headers"][name]
}

fn traceparent_of(body: &Value) -> (String, String) {
    let tp = header(body, "traceparent")
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
    let echo = Echo::start("echo").await;
    let backend = echo.addr;
    let endpoint = format!("http://{}", collector.grpc);
    let gantry = start_gantry(
        backend,
        &["--otlp-endpoint", &endpoint, "--trace-sampling-ratio", "1"],
    )
    .await;

    // A traced route continues the client's trace; the backend's parent is Gantry's upstream span.
    let incoming = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (status, body) = get(
        &gantry,
        "traced.example",
        &[("traceparent", &incoming), ("tracestate", "vendor=7")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (sent_trace, sent_parent) = traceparent_of(&body);
    assert_eq!(sent_trace, TRACE_ID);
    assert_ne!(sent_parent, CLIENT_SPAN);
    assert_eq!(header(&body, "tracestate"), "vendor=7");

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
    assert_eq!(auth_traceparent(&echo), Some(auth_parent));

    // A route that does not trust incoming spans starts a trace of its own.
    let (status, body) = get(&gantry, "fresh.example", &[("traceparent", &incoming)]).await;
    assert_eq!(status, 200);
    let (fresh_trace, _) = traceparent_of(&body);
    assert_ne!(fresh_trace, TRACE_ID);
    let fresh = collector.trace(&fresh_trace, 2).await;
    let server = fresh.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(server.parent, "", "a new trace has no parent: {server:#?}");
    assert_eq!(header(&body, "tracestate"), &Value::Null);

    // A route that is not traced passes the client's context on untouched, and makes no span.
    let quiet_trace = "0af7651916cd43dd8448eb211c80319c";
    let quiet = format!("00-{quiet_trace}-b7ad6b7169203331-01");
    let (status, body) = get(&gantry, "quiet.example", &[("traceparent", &quiet)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&body, "traceparent"), quiet.as_str());

    // Exported spans are counted, none dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gantry, "gantry_trace_spans_exported_total").await < 5.0 {
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
        metric(
            &gantry,
            "gantry_trace_spans_dropped_total{reason=\"export_failed\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_otlp_http_too() {
    let Some(bin) = otelcol() else { return };
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&bin, dir.path()).await;
    let echo = Echo::start("echo").await;
    let endpoint = format!("http://{}/v1/traces", collector.http);
    let gantry = start_gantry(
        echo.addr,
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
    let (status, body) = get(&gantry, "fresh.example", &[]).await;
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
    let echo = Echo::start("echo").await;
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let gantry = start_gantry(
        echo.addr,
        &["--otlp-endpoint", &endpoint, "--trace-sampling-ratio", "1"],
    )
    .await;
    let started = Instant::now();
    for _ in 0..100 {
        let (status, body) = get(&gantry, "fresh.example", &[]).await;
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
        let dropped = metric(
            &gantry,
            "gantry_trace_spans_dropped_total{reason=\"export_failed\"}",
        )
        .await
            + metric(&gantry, "gantry_trace_spans_dropped_total{reason=\"queue_full\"}").await;
        if dropped >= 200.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {dropped} of 200 spans counted as dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&gantry, "gantry_trace_spans_exported_total").await, 0.0);
}
