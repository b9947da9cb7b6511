//! The data plane's Prometheus metrics. Handles are created once; the data path only increments
//! atomics (per-route counters are looked up once per route and worker, see `state`). The
//! controller registers its own metrics in the same registry.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// A label value shared with the snapshot instead of copied per request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// The object a route came from and the Service it forwards to: `kind` is `Ingress`, `HTTPRoute`
/// or `GRPCRoute`, `ingress` the object's name. Requests that matched no route have empty values.
/// Bounded by the configuration: never a path, a host or a client address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub kind: &'static str,
    pub namespace: Label,
    pub ingress: Label,
    pub service: Label,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub route: RouteLabels,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

/// An open client connection's listener (`http`, `https`) and protocol (`http1`, `h2`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: &'static str,
    pub protocol: &'static str,
}

/// A TLS host of the snapshot (`a.example`, `*.example`): one per name of the certificate table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HostLabels {
    pub host: String,
}

/// A backend as a route names it: the Service and its port (a number or a port name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    pub namespace: Label,
    pub service: Label,
    pub port: Label,
}

/// A histogram family whose histograms share one set of buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A gauge holding a float (a Unix time).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The data plane's metrics, registered under the registry's prefix (`gantry_` in the binary).
/// Cheap to clone: every clone increments the same counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    /// Time from the request head to the response head, by route.
    pub request_duration: HistogramFamily<RouteLabels>,
    /// Time from sending the request to the first endpoint to the response head of the last
    /// attempt (retries included), by route; requests that never went upstream are not observed.
    pub upstream_duration: HistogramFamily<RouteLabels>,
    pub upstream_connect_errors: Counter,
    pub upstream_timeouts: Counter,
    /// Open client connections by listener and protocol. A TLS connection counts once its
    /// handshake is done (its protocol is the ALPN choice); a plain one from accept, as `http1`
    /// until its first bytes are the HTTP/2 preface.
    pub active_connections: Family<ConnectionLabels, Gauge>,
    /// Bytes read from clients, by listener: what HTTP sees (after TLS), heads and bodies,
    /// WebSocket tunnels included.
    pub received_bytes: Family<ListenerLabels, Counter>,
    /// Bytes written to clients, by listener (as `received_bytes`).
    pub sent_bytes: Family<ListenerLabels, Counter>,
    /// The `notAfter` of each TLS host's certificate, as a Unix time. Set at each publish whose
    /// certificates changed; hosts no longer served are removed.
    pub tls_certificate_expiry: Family<HostLabels, FloatGauge>,
    /// Endpoints of each backend of the serving snapshot (0: requests to it get 503).
    pub backend_endpoints: Family<BackendLabels, Gauge>,
    /// Unix time of the last publish that changed the serving snapshot.
    pub snapshot_last_publish: FloatGauge,
    /// Every route label set counted so far with its counters, for the admin status page
    /// (a `Family` cannot be iterated). Grows as `requests` does: with the configuration.
    pub route_index: RouteIndex,
    pub tls_handshakes: Family<ResultLabels, Counter>,
    pub snapshot_generation: Gauge,
    pub routes: Gauge,
    pub endpoints: Gauge,
    /// Connections closed at accept because `--max-connections` were open.
    pub connections_refused: Counter,
    /// Requests answered with an error of the client's making (400, 408, 413, 431, 501), by reason.
    pub rejected_requests: Family<RejectLabels, Counter>,
    /// Requests sent to another endpoint after a failed attempt, by the `proxy_next_upstream`
    /// condition that failed (`policy::Condition::label`: a dozen values at most).
    pub upstream_retries: Family<RetryLabels, Counter>,
    /// Error pages fetched from an error backend (`custom-http-errors`), by result (`ok`,
    /// `failed`: the original response was returned, `no_backend`).
    pub error_pages: Family<ResultLabels, Counter>,
    /// Copies of requests for the mirror backends (`RequestMirror`), by result: `sent` (handed to
    /// the mirror; its answer or failure is not counted here), `dropped_in_flight` (this worker
    /// already had its most mirror requests in flight), `dropped_streaming` (the body was still
    /// streaming, so there was nothing to copy), `no_endpoint`.
    pub mirrored_requests: Family<ResultLabels, Counter>,
    /// The counters of `mirrored_requests`, looked up once, so that counting a mirror request is
    /// one atomic increment.
    pub mirrors: MirrorCounters,
    /// Spans the OTLP exporter sent (`trace_spans_exported`) and dropped
    /// (`trace_spans_dropped{reason}`: `queue_full`, the export queue was full; `export_failed`,
    /// the collector did not take them), see `crate::trace`.
    pub trace_spans: crate::trace::SpanCounters,
}

/// One counter per result of `mirrored_requests`.
#[derive(Clone, Debug)]
pub struct MirrorCounters {
    pub sent: Counter,
    pub dropped_in_flight: Counter,
    pub dropped_streaming: Counter,
    pub no_endpoint: Counter,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

impl Default for Metrics {
    /// Metrics registered nowhere, for tests.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl Metrics {
    /// Creates the data plane's metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route source, Service and status class",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from request head to response head, by route source and Service",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "upstream_response_duration",
            "Time from sending a request upstream to the response head (retries included), by route \
             source and Service",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let upstream_connect_errors = Counter::default();
        registry.register(
            "upstream_connect_errors",
            "Failed or timed-out connection attempts to endpoints",
            upstream_connect_errors.clone(),
        );
        let upstream_timeouts = Counter::default();
        registry.register(
            "upstream_timeouts",
            "Requests that got no response head within the upstream response timeout",
            upstream_timeouts.clone(),
        );
        let active_connections = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "active_connections",
            "Open client connections by listener and protocol",
            active_connections.clone(),
        );
        let received_bytes = Family::<ListenerLabels, Counter>::default();
        registry.register_with_unit(
            "received",
            "Bytes read from clients (after TLS), by listener",
            Unit::Bytes,
            received_bytes.clone(),
        );
        let sent_bytes = Family::<ListenerLabels, Counter>::default();
        registry.register_with_unit(
            "sent",
            "Bytes written to clients (before TLS), by listener",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        let tls_certificate_expiry = Family::<HostLabels, FloatGauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the certificate served for a TLS host expires (notAfter)",
            tls_certificate_expiry.clone(),
        );
        let backend_endpoints = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_endpoints",
            "Endpoints of each backend in the serving snapshot (0: its requests get 503)",
            backend_endpoints.clone(),
        );
        let snapshot_last_publish = FloatGauge::default();
        registry.register(
            "snapshot_last_publish_timestamp_seconds",
            "Unix time of the last publish that changed the serving snapshot",
            snapshot_last_publish.clone(),
        );
        let tls_handshakes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes by result",
            tls_handshakes.clone(),
        );
        let snapshot_generation = Gauge::default();
        registry.register(
            "snapshot_generation",
            "Generation of the serving snapshot",
            snapshot_generation.clone(),
        );
        let routes = Gauge::default();
        registry.register("routes", "Routes in the serving snapshot", routes.clone());
        let endpoints = Gauge::default();
        registry.register(
            "endpoints",
            "Distinct endpoints in the serving snapshot",
            endpoints.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed at accept because the connection limit was reached",
            connections_refused.clone(),
        );
        let rejected_requests = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests refused as the client's fault, by reason",
            rejected_requests.clone(),
        );
        let upstream_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests sent to another endpoint after a failed attempt, by what failed",
            upstream_retries.clone(),
        );
        let error_pages = Family::<ResultLabels, Counter>::default();
        registry.register(
            "error_pages",
            "Custom error pages requested from an error backend, by result",
            error_pages.clone(),
        );
        let mirrored_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "mirrored_requests",
            "Copies of requests for mirror backends, by result (sent or why dropped)",
            mirrored_requests.clone(),
        );
        let mirror = |result| mirrored_requests.get_or_create(&ResultLabels { result }).clone();
        let mirrors = MirrorCounters {
            sent: mirror("sent"),
            dropped_in_flight: mirror("dropped_in_flight"),
            dropped_streaming: mirror("dropped_streaming"),
            no_endpoint: mirror("no_endpoint"),
        };
        let trace_exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans sent to the OTLP collector",
            trace_exported.clone(),
        );
        let trace_dropped = Family::<RejectLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped, by reason (queue_full: the export queue was full; export_failed: the \
             collector did not take them)",
            trace_dropped.clone(),
        );
        let dropped = |reason| trace_dropped.get_or_create(&RejectLabels { reason }).clone();
        let trace_spans = crate::trace::SpanCounters {
            exported: trace_exported,
            dropped_queue_full: dropped("queue_full"),
            dropped_export_failed: dropped("export_failed"),
        };
        Self {
            trace_spans,
            mirrors,
            mirrored_requests,
            connections_refused,
            rejected_requests,
            upstream_retries,
            error_pages,
            requests,
            request_duration,
            upstream_duration,
            upstream_connect_errors,
            upstream_timeouts,
            active_connections,
            received_bytes,
            sent_bytes,
            tls_certificate_expiry,
            backend_endpoints,
            snapshot_last_publish,
            route_index: RouteIndex::default(),
            tls_handshakes,
            snapshot_generation,
            routes,
            endpoints,
        }
    }
}

/// The Prometheus text exposition of every metric in a registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The five counters of one label set, by status class, so that counting a request is one atomic
/// increment once they are looked up.
pub type ClassCounters = [Counter; 5];

/// The metrics of one route's labels, looked up once per route and worker (see `state`).
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    pub classes: ClassCounters,
    pub duration: Histogram,
    pub upstream_duration: Histogram,
}

/// Every route label set with its request counters, in the order first counted.
#[derive(Clone, Debug, Default)]
pub struct RouteIndex(Arc<Mutex<HashMap<RouteLabels, ClassCounters>>>);

impl RouteIndex {
    /// The label sets and their counters' current values (by status class).
    pub fn totals(&self) -> Vec<(RouteLabels, [u64; 5])> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(labels, counters)| (labels.clone(), counters.clone().map(|c| c.get())))
            .collect()
    }
}

impl Metrics {
    /// The metrics of one route's labels. Takes the families' locks: callers keep the result (see
    /// `state`).
    pub fn route_metrics(&self, labels: &RouteLabels) -> RouteMetrics {
        let classes = CLASSES.map(|status_class| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: labels.clone(),
                    status_class,
                })
                .clone()
        });
        self.route_index
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels.clone())
            .or_insert_with(|| classes.clone());
        RouteMetrics {
            classes,
            duration: self.request_duration.get_or_create_owned(labels),
            upstream_duration: self.upstream_duration.get_or_create_owned(labels),
        }
    }
}

/// The index into [`ClassCounters`] of a status.
pub fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}
