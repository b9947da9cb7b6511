//! Prometheus metrics. Handles are created once; the data path only increments atomics and, for
//! per-route counters, looks up one label set.

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

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The kind of Kubernetes object a cluster-mode metric is about (`Ingress`, `Service`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Every metric Gantry exports, registered under the `gantry_` prefix.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub upstream_connect_errors: Counter,
    pub upstream_timeouts: Counter,
    pub active_connections: Family<ListenerLabels, Gauge>,
    pub tls_handshakes: Family<ResultLabels, Counter>,
    pub snapshot_rebuilds: Family<ResultLabels, Counter>,
    pub snapshot_build_duration: Histogram,
    pub snapshot_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub snapshot_generation: Gauge,
    pub routes: Gauge,
    pub endpoints: Gauge,
    pub diagnostics: Family<ReasonLabels, Gauge>,
    /// Cluster mode: Unix time of the last event from any watch (an object listed, added, changed or
    /// deleted). Stays 0 in file mode.
    pub kube_last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Cluster mode: failed list or watch calls, by kind; each is retried with backoff.
    pub kube_watch_errors: Family<KindLabels, Counter>,
    /// Cluster mode: 1 while this replica holds the election Lease (and so writes status and Events).
    pub leader: Gauge,
    /// Cluster mode: Ingress status patches by result (`ok`, `error`).
    pub status_writes: Family<ResultLabels, Counter>,
    /// Cluster mode: Kubernetes Events published by result (`ok`, `error`).
    pub events_published: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gantry");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by Ingress, Service and status class",
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
        let snapshot_rebuilds = Family::<ResultLabels, Counter>::default();
        registry.register(
            "snapshot_rebuilds",
            "Snapshot builds by result",
            snapshot_rebuilds.clone(),
        );
        let snapshot_build_duration =
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register_with_unit(
            "snapshot_build_duration",
            "Time to translate the object store into a snapshot",
            Unit::Seconds,
            snapshot_build_duration.clone(),
        );
        let snapshot_last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "snapshot_last_success_timestamp_seconds",
            "Unix time of the last published snapshot",
            snapshot_last_success.clone(),
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
        let diagnostics = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "diagnostics",
            "Problems in the serving snapshot by reason",
            diagnostics.clone(),
        );
        let kube_last_sync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "kube_last_sync_timestamp_seconds",
            "Unix time of the last event received from any Kubernetes watch",
            kube_last_sync.clone(),
        );
        let kube_watch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "kube_watch_errors",
            "Failed Kubernetes list or watch calls by kind (retried with backoff)",
            kube_watch_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the election Lease and writes status and Events",
            leader.clone(),
        );
        let status_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "ingress_status_writes",
            "Ingress status patches by result",
            status_writes.clone(),
        );
        let events_published = Family::<ResultLabels, Counter>::default();
        registry.register(
            "kube_events",
            "Kubernetes Events published by result",
            events_published.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_connect_errors,
            upstream_timeouts,
            active_connections,
            tls_handshakes,
            snapshot_rebuilds,
            snapshot_build_duration,
            snapshot_last_success,
            snapshot_generation,
            routes,
            endpoints,
            diagnostics,
            kube_last_sync,
            kube_watch_errors,
            leader,
            status_writes,
            events_published,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The request counters of one route, by status class.
#[derive(Debug, Default)]
pub struct RouteStats {
    counters: std::sync::OnceLock<[Counter; 5]>,
}

impl RouteStats {
    /// Counts one request. The first call per route and snapshot looks up the labelled counters;
    /// every later one is a single atomic increment.
    pub fn count(&self, metrics: &Metrics, labels: impl FnOnce() -> (Label, Label, Label), status: u16) {
        let counters = self.counters.get_or_init(|| {
            let (namespace, ingress, service) = labels();
            CLASSES.map(|status_class| {
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        namespace: namespace.clone(),
                        ingress: ingress.clone(),
                        service: service.clone(),
                        status_class,
                    })
                    .clone()
            })
        });
        counters[class_index(status)].inc();
    }
}

fn class_index(status: u16) -> usize {
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
