//! The data plane's Prometheus metrics. Handles are created once; the data path only increments
//! atomics (per-route counters are looked up once per route and worker, see `state`). The
//! controller registers its own metrics in the same registry.

use std::sync::Arc;

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

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: Label,
    pub ingress: Label,
    pub service: Label,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
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
    pub request_duration: Histogram,
    pub upstream_connect_errors: Counter,
    pub upstream_timeouts: Counter,
    pub active_connections: Family<ListenerLabels, Gauge>,
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
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let request_duration = Histogram::new(buckets);
        registry.register_with_unit(
            "request_duration",
            "Time from request head to response head",
            Unit::Seconds,
            request_duration.clone(),
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
        let active_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "active_connections",
            "Open client connections",
            active_connections.clone(),
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
        Self {
            mirrors,
            mirrored_requests,
            connections_refused,
            rejected_requests,
            upstream_retries,
            error_pages,
            requests,
            request_duration,
            upstream_connect_errors,
            upstream_timeouts,
            active_connections,
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

impl Metrics {
    /// The counters of one route's labels (`namespace`, `ingress`, `service`), by status class.
    /// Takes the family's lock: callers keep the result (see `state`).
    pub fn class_counters(&self, namespace: &Label, ingress: &Label, service: &Label) -> ClassCounters {
        CLASSES.map(|status_class| {
            self.requests
                .get_or_create(&RequestLabels {
                    namespace: namespace.clone(),
                    ingress: ingress.clone(),
                    service: service.clone(),
                    status_class,
                })
                .clone()
        })
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
