//! Tracing: W3C Trace Context in and out, one span per request, spans out over OTLP.
//!
//! A traced route's request that is sampled gets a server span, and child spans for the external
//! auth subrequest and the upstream exchange; the upstream request carries a `traceparent` whose
//! parent is Gantry's upstream span (and the client's `tracestate`, when its context was trusted).
//! Spans are built here as OpenTelemetry's [`SpanData`] and exported by `opentelemetry-otlp`
//! (gRPC or HTTP/protobuf) from a thread of their own.
//!
//! **Requests never wait on tracing.** With tracing off (the default) a request pays one branch.
//! A request that is not sampled pays the sampling draw, and, when its route does not trust
//! incoming spans, the removal of the client's `traceparent`. A sampled request's spans go to a
//! bounded queue with one `try_send`: when the queue is full (the collector is slow or down, and
//! the exporter is still busy with earlier batches), they are dropped and counted
//! (`gantry_trace_spans_dropped_total{reason="queue_full"}`); a batch the collector does not take
//! is dropped and counted too (`reason="export_failed"`). Nothing is retried.
//!
//! **Which requests are traced.** A route is traced when its `enable-opentelemetry` annotation
//! says so, or, without it, when the class-wide setting ([`TraceSettings::enabled`]) does; and
//! only when the process has an exporter (`--otlp-endpoint`). Requests that match no route are
//! not traced. Of a traced route's requests, [`TraceSettings::sampling_per_million`] are sampled,
//! decided on the trace id (as OpenTelemetry's `TraceIdRatioBased` sampler does), so that every
//! hop of one trace that uses the same ratio decides alike; with
//! [`TraceSettings::parent_based`], a trusted incoming context that is sampled is always sampled.
//!
//! **Unsampled requests** are not given a context of their own: a trusted incoming `traceparent`
//! goes upstream as it came; an untrusted one (`opentelemetry-trust-incoming-span: "false"`) is
//! removed with its `tracestate`, so that the backend starts a trace of its own.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The class-wide tracing settings (part of [`crate::ProxyConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceSettings {
    /// Routes are traced unless their Ingress says `enable-opentelemetry: "false"`. Default off
    /// (ingress-nginx's `enable-opentelemetry` ConfigMap key).
    pub enabled: bool,
    /// Requests sampled per million (ingress-nginx's `otel-sampler-ratio`). Default 10 000 (1%).
    pub sampling_per_million: u32,
    /// A trusted incoming context that is sampled is sampled whatever the ratio
    /// (ingress-nginx's `otel-sampler-parent-based`). Default off.
    pub parent_based: bool,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            sampling_per_million: 10_000,
            parent_based: false,
        }
    }
}

/// A route's own tracing policy (the `enable-opentelemetry` and
/// `opentelemetry-trust-incoming-span` annotations). `None` on a route: the class-wide setting,
/// trusting incoming spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTracing {
    /// `None`: the class-wide [`TraceSettings::enabled`].
    pub enabled: Option<bool>,
    /// Continue the client's trace (default true, as in ingress-nginx); false starts a new one.
    pub trust_incoming: bool,
}

impl Default for RouteTracing {
    fn default() -> Self {
        Self {
            enabled: None,
            trust_incoming: true,
        }
    }
}

/// A `traceparent` header (W3C Trace Context, version 00 and the prefix of later versions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` for anything the spec says to ignore (bad length or
    /// hex, version `ff`, all-zero ids, version 00 with trailing data).
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex_u8(&value[0..2])?;
        if version == 0xff || (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        let trace_id = u128::from_str_radix(lower_hex(&value[3..35])?, 16).ok()?;
        let span_id = u64::from_str_radix(lower_hex(&value[36..52])?, 16).ok()?;
        let flags = hex_u8(&value[53..55])?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id: TraceId::from(trace_id),
            span_id: SpanId::from(span_id),
            sampled: flags & 1 == 1,
        })
    }

    /// The header value, version 00.
    pub fn header_value(&self) -> HeaderValue {
        let flags = if self.sampled { "01" } else { "00" };
        let text = format!("00-{}-{}-{flags}", self.trace_id, self.span_id);
        HeaderValue::from_str(&text).expect("hex and dashes are a valid header value")
    }
}

fn lower_hex(s: &[u8]) -> Option<&str> {
    s.iter()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        .then(|| std::str::from_utf8(s).ok())
        .flatten()
}

fn hex_u8(s: &[u8]) -> Option<u8> {
    u8::from_str_radix(lower_hex(s)?, 16).ok()
}

/// Whether a trace id falls in the sampled share (the low 8 bytes, as `TraceIdRatioBased`).
fn sampled_by_ratio(trace_id: TraceId, per_million: u32) -> bool {
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..16].try_into().expect("8 bytes"));
    low % 1_000_000 < u64::from(per_million)
}

fn new_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

/// What the tracing phase decided for one request.
#[derive(Debug, Default)]
pub enum Decision {
    /// Not traced, or not sampled with a trusted (or no) incoming context: nothing to do.
    #[default]
    Untouched,
    /// Not sampled, and the route does not trust incoming spans: the client's context is removed.
    Strip,
    /// Sampled: the request's spans.
    Sampled(Box<RequestTrace>),
}

/// The spans of one sampled request, built as the request goes.
#[derive(Debug)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The server span's id.
    pub span_id: SpanId,
    /// The client's span, when its context was trusted.
    pub parent: Option<SpanId>,
    /// The client's `tracestate`, when its context was trusted.
    pub tracestate: Option<HeaderValue>,
    pub start: SystemTime,
    /// Attributes of the server span known at its start.
    pub attributes: Vec<KeyValue>,
    /// Finished child spans.
    pub children: Vec<SpanData>,
}

/// Decides whether a request to a route is traced and sampled, and starts its server span.
/// `attributes` is called only for a sampled request.
pub fn decide(
    settings: &TraceSettings,
    route: Option<&RouteTracing>,
    headers: &HeaderMap,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Decision {
    let (enabled, trust) = match route {
        Some(r) => (r.enabled.unwrap_or(settings.enabled), r.trust_incoming),
        None => (settings.enabled, true),
    };
    if !enabled {
        return Decision::Untouched;
    }
    let incoming = headers.get(&TRACEPARENT);
    let parent = incoming
        .filter(|_| trust)
        .and_then(|v| TraceParent::parse(v.as_bytes()));
    let (trace_id, sampled) = match parent {
        Some(p) => (
            p.trace_id,
            (settings.parent_based && p.sampled)
                || sampled_by_ratio(p.trace_id, settings.sampling_per_million),
        ),
        None => {
            // The id is only made when the request is sampled; the draw is the same.
            let draw = fastrand::u32(..1_000_000);
            let sampled = draw < settings.sampling_per_million;
            let id = if sampled {
                TraceId::from(fastrand::u128(1..))
            } else {
                TraceId::INVALID
            };
            (id, sampled)
        }
    };
    if !sampled {
        return if !trust && (incoming.is_some() || headers.contains_key(&TRACESTATE)) {
            Decision::Strip
        } else {
            Decision::Untouched
        };
    }
    let tracestate = parent.and_then(|_| headers.get(&TRACESTATE).cloned());
    Decision::Sampled(Box::new(RequestTrace {
        trace_id,
        span_id: new_span_id(),
        parent: parent.map(|p| p.span_id),
        tracestate,
        start: SystemTime::now(),
        attributes: attributes(),
        children: Vec::new(),
    }))
}

/// A child span in progress (upstream exchange, external auth).
#[derive(Debug)]
pub struct ChildSpan {
    pub span_id: SpanId,
    pub start: SystemTime,
}

// === impl RequestTrace ===

impl RequestTrace {
    /// Starts a child span of the server span.
    pub fn child(&self) -> ChildSpan {
        ChildSpan {
            span_id: new_span_id(),
            start: SystemTime::now(),
        }
    }

    /// Sets `traceparent` (the child as parent, sampled) and the trusted `tracestate` on a
    /// request going out for `child`.
    pub fn inject(&self, child: &ChildSpan, headers: &mut HeaderMap) {
        let parent = TraceParent {
            trace_id: self.trace_id,
            span_id: child.span_id,
            sampled: true,
        };
        headers.insert(&TRACEPARENT, parent.header_value());
        match &self.tracestate {
            Some(state) => {
                headers.insert(&TRACESTATE, state.clone());
            }
            None => {
                headers.remove(&TRACESTATE);
            }
        }
    }

    /// Ends a child span now.
    pub fn end_child(
        &mut self,
        child: ChildSpan,
        name: impl Into<Cow<'static, str>>,
        error: bool,
        attributes: Vec<KeyValue>,
    ) {
        let span = self.span(
            child.span_id,
            Some(self.span_id),
            SpanKind::Client,
            name.into(),
            child.start,
            error,
            attributes,
        );
        self.children.push(span);
    }

    /// Ends the server span now; every span of the request, ready to export.
    pub fn finish(
        mut self,
        name: impl Into<Cow<'static, str>>,
        error: bool,
        attributes: impl IntoIterator<Item = KeyValue>,
    ) -> Vec<SpanData> {
        let mut attrs = std::mem::take(&mut self.attributes);
        attrs.extend(attributes);
        let server = self.span(
            self.span_id,
            self.parent,
            SpanKind::Server,
            name.into(),
            self.start,
            error,
            attrs,
        );
        let mut spans = std::mem::take(&mut self.children);
        spans.push(server);
        spans
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        span_id: SpanId,
        parent: Option<SpanId>,
        kind: SpanKind,
        name: Cow<'static, str>,
        start: SystemTime,
        error: bool,
        attributes: Vec<KeyValue>,
    ) -> SpanData {
        // Only the server span's parent is remote (the client's).
        let remote_parent = parent.is_some() && parent == self.parent;
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: remote_parent,
            span_kind: kind,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if error { Status::error("") } else { Status::Unset },
            instrumentation_scope: scope(),
        }
    }
}

fn scope() -> InstrumentationScope {
    static SCOPE: std::sync::OnceLock<InstrumentationScope> = std::sync::OnceLock::new();
    SCOPE
        .get_or_init(|| {
            InstrumentationScope::builder("gantry")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build()
        })
        .clone()
}

// === export ===

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318, path `/v1/traces`).
    Http,
}

/// Where and how spans are exported. Read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// The collector: `http://host:4317` for gRPC, `http://host:4318/v1/traces` for HTTP.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// The `service.name` of the spans' resource. Default `gantry`.
    pub service_name: String,
    /// Requests whose spans may wait for export; beyond it they are dropped. Default 2048.
    pub queue: usize,
    /// Most spans in one export call. Default 512.
    pub max_batch: usize,
    /// Longest a span waits before its batch is sent. Default 1 s.
    pub delay: Duration,
    /// Longest one export call may take. Default 5 s.
    pub timeout: Duration,
}

impl ExportConfig {
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            service_name: "gantry".into(),
            queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `opentelemetry-otlp` refused the settings (an endpoint that is not a URI, ...).
    #[error("OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The export thread could not start.
    #[error("OTLP export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters of what became of spans.
#[derive(Clone, Debug, Default)]
pub struct SpanCounters {
    pub exported: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_export_failed: Counter,
}

/// The handle the request path sends finished spans to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    queue: mpsc::Sender<Vec<SpanData>>,
    counters: SpanCounters,
}

impl Tracer {
    /// Starts the export thread (its own single-threaded runtime, so that a slow collector takes
    /// no time from the traffic threads). It ends when every `Tracer` clone is dropped, after
    /// sending what was queued.
    pub fn start(config: ExportConfig, counters: SpanCounters) -> Result<Self, Error> {
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let export_counters = counters.clone();
        std::thread::Builder::new()
            .name("gantry-otlp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Thread(e)));
                        return;
                    }
                };
                // The tonic channel is made inside the runtime that drives it.
                let exporter = rt.block_on(async { build_exporter(&config) });
                let exporter = match exporter {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(export_loop(exporter, rx, config, export_counters));
            })
            .map_err(Error::Thread)?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(Error::Thread(std::io::Error::other("export thread died"))))?;
        Ok(Self { queue, counters })
    }

    /// Hands a request's spans to the export queue without waiting; drops them (counted) when
    /// the queue is full.
    pub fn send(&self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        if self.queue.try_send(spans).is_err() {
            self.counters.dropped_queue_full.inc_by(n);
        }
    }
}

fn build_exporter(config: &ExportConfig) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    use opentelemetry_otlp::WithExportConfig;
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match config.protocol {
        OtlpProtocol::Grpc => builder
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .build()?,
        OtlpProtocol::Http => builder
            .with_http()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .build()?,
    };
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .build();
    exporter.set_resource(&resource);
    Ok(exporter)
}

/// Batches what the queue holds (up to `max_batch` spans, or what came within `delay`) and
/// exports it, one export at a time. While an export runs, the queue fills; what does not fit is
/// dropped by [`Tracer::send`].
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Vec<SpanData>>,
    config: ExportConfig,
    counters: SpanCounters,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(config.max_batch);
    let mut open = true;
    while open {
        // Wait for the first spans of a batch without a deadline, then fill it for `delay`.
        match rx.recv().await {
            Some(spans) => batch.extend(spans),
            None => break,
        }
        let deadline = tokio::time::Instant::now() + config.delay;
        while batch.len() < config.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(spans)) => batch.extend(spans),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(config.max_batch));
        let n = spans.len() as u64;
        // The exporter has its own timeout; this one also bounds a connect that hangs.
        match tokio::time::timeout(config.timeout + Duration::from_secs(1), exporter.export(spans)).await {
            Ok(Ok(())) => {
                counters.exported.inc_by(n);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, spans = n, "span export failed; the spans are dropped");
                counters.dropped_export_failed.inc_by(n);
            }
            Err(_) => {
                tracing::debug!(spans = n, "span export timed out; the spans are dropped");
                counters.dropped_export_failed.inc_by(n);
            }
        }
    }
}

// === attributes ===

/// `KeyValue` from a static key and a string value.
pub fn kv(key: &'static str, value: impl Into<opentelemetry::StringValue>) -> KeyValue {
    KeyValue::new(key, opentelemetry::Value::String(value.into()))
}

/// `KeyValue` from a static key and an integer.
pub fn kv_i64(key: &'static str, value: i64) -> KeyValue {
    KeyValue::new(key, value)
}

/// The peer attributes of an endpoint (`server.address`/`server.port` and the
/// `network.peer.*` pair, which are the same for an endpoint reached by address).
pub fn endpoint_attributes(addr: SocketAddr, out: &mut Vec<KeyValue>) {
    let ip = addr.ip().to_string();
    out.push(kv("server.address", ip.clone()));
    out.push(kv_i64("server.port", i64::from(addr.port())));
    out.push(kv("network.peer.address", ip));
    out.push(kv_i64("network.peer.port", i64::from(addr.port())));
}

/// The `Arc<str>` of a route's labels as an attribute value, without copying the text.
pub fn kv_arc(key: &'static str, value: &Arc<str>) -> KeyValue {
    kv(key, value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = TraceParent::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(p.header_value(), SAMPLE);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version may carry more fields after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-whatever";
        assert!(!TraceParent::parse(later.as_bytes()).unwrap().sampled);
    }

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_str(traceparent).unwrap());
        h.insert(&TRACESTATE, HeaderValue::from_static("vendor=1"));
        h
    }

    const ALL: TraceSettings = TraceSettings {
        enabled: true,
        sampling_per_million: 1_000_000,
        parent_based: false,
    };

    #[test]
    fn a_trusted_incoming_trace_is_continued() {
        let Decision::Sampled(t) = decide(&ALL, None, &headers(SAMPLE), Vec::new) else {
            panic!("not sampled");
        };
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent.unwrap().to_string(), "00f067aa0ba902b7");
        let child = t.child();
        let mut out = HeaderMap::new();
        t.inject(&child, &mut out);
        let sent = TraceParent::parse(out[&TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(sent.trace_id, t.trace_id);
        assert_eq!(sent.span_id, child.span_id);
        assert_eq!(out[&TRACESTATE], "vendor=1");
    }

    #[test]
    fn an_untrusted_incoming_trace_is_replaced() {
        let route = RouteTracing {
            enabled: None,
            trust_incoming: false,
        };
        let Decision::Sampled(t) = decide(&ALL, Some(&route), &headers(SAMPLE), Vec::new) else {
            panic!("not sampled");
        };
        assert_ne!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent, None);
        assert_eq!(t.tracestate, None);
        let none = TraceSettings {
            sampling_per_million: 0,
            ..ALL
        };
        assert!(matches!(
            decide(&none, Some(&route), &headers(SAMPLE), Vec::new),
            Decision::Strip
        ));
    }

    #[test]
    fn tracing_off_or_unsampled_leaves_the_request_alone() {
        let off = TraceSettings::default();
        assert!(matches!(
            decide(&off, None, &headers(SAMPLE), Vec::new),
            Decision::Untouched
        ));
        let route_off = RouteTracing {
            enabled: Some(false),
            trust_incoming: true,
        };
        assert!(matches!(
            decide(&ALL, Some(&route_off), &headers(SAMPLE), Vec::new),
            Decision::Untouched
        ));
        let route_on = RouteTracing {
            enabled: Some(true),
            trust_incoming: true,
        };
        let never = TraceSettings {
            sampling_per_million: 0,
            ..off
        };
        assert!(matches!(
            decide(&never, Some(&route_on), &headers(SAMPLE), Vec::new),
            Decision::Untouched
        ));
        // Parent-based: the client's sampled flag wins over a ratio of 0.
        let parent_based = TraceSettings {
            parent_based: true,
            ..never
        };
        assert!(matches!(
            decide(&parent_based, Some(&route_on), &headers(SAMPLE), Vec::new),
            Decision::Sampled(_)
        ));
    }

    #[test]
    fn the_ratio_samples_about_its_share() {
        let tenth = TraceSettings {
            sampling_per_million: 100_000,
            ..ALL
        };
        let sampled = (0..20_000)
            .filter(|_| {
                matches!(
                    decide(&tenth, None, &HeaderMap::new(), Vec::new),
                    Decision::Sampled(_)
                )
            })
            .count();
        assert!((1_600..2_400).contains(&sampled), "{sampled}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        // A collector that accepts connections and never answers: the first export hangs until
        // its timeout, the queue (one request's spans) fills, and the rest is dropped at once.
        let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/v1/traces", blackhole.local_addr().unwrap());
        let config = ExportConfig {
            queue: 1,
            max_batch: 1,
            delay: Duration::from_millis(10),
            timeout: Duration::from_secs(3),
            ..ExportConfig::new(endpoint, OtlpProtocol::Http)
        };
        let counters = SpanCounters::default();
        let tracer = Tracer::start(config, counters.clone()).unwrap();
        let spans = || {
            let Decision::Sampled(t) = decide(&ALL, None, &HeaderMap::new(), Vec::new) else {
                panic!("not sampled");
            };
            t.finish("GET /", false, [])
        };
        tracer.send(spans());
        std::thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        for _ in 0..10 {
            tracer.send(spans());
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert!(
            counters.dropped_queue_full.get() >= 9,
            "{}",
            counters.dropped_queue_full.get()
        );
        assert_eq!(counters.exported.get(), 0);
    }

    #[test]
    fn spans_of_a_request_form_one_tree() {
        let Decision::Sampled(mut t) = decide(&ALL, None, &headers(SAMPLE), Vec::new) else {
            panic!("not sampled");
        };
        let child = t.child();
        t.end_child(child, "GET", false, vec![kv("gantry.span", "upstream")]);
        let (trace_id, server_id) = (t.trace_id, t.span_id);
        let spans = t.finish("GET /", false, [kv_i64("http.response.status_code", 200)]);
        assert_eq!(spans.len(), 2);
        let server = &spans[1];
        assert_eq!(server.span_kind, SpanKind::Server);
        assert!(server.parent_span_is_remote);
        assert_eq!(spans[0].parent_span_id, server_id);
        assert!(!spans[0].parent_span_is_remote);
        assert!(spans.iter().all(|s| s.span_context.trace_id() == trace_id));
    }
}
