//! The controller's Prometheus metrics, registered in the same registry as the data plane's (the
//! binary serves both on the admin port's `/metrics`).

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

pub use gantry_proxy::metrics::ResultLabels;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The kind of Kubernetes object a cluster-mode metric is about (`Ingress`, `Service`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// A store event's kind and what it did: `changed` (translation reads something that changed, so the
/// snapshot is built again) or `ignored` (nothing it reads: a status Gantry wrote, a
/// `resourceVersion` bump, a label it drops).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreEventLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

/// Every metric of the controller. Cheap to clone: clones share the counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Rebuilds by result: `ok` (published), `unchanged` (equal to the serving snapshot, not
    /// published), `error`.
    pub snapshot_rebuilds: Family<ResultLabels, Counter>,
    pub snapshot_build_duration: Histogram,
    /// Parts of builds (certificates, backends, annotations, Ingress facts, hosts' routes) by
    /// whether they were reused from the last build (`hit`) or made anew (`miss`).
    pub translate_cache: Family<ResultLabels, Counter>,
    /// Builds by how they were made: `patch` (the last build patched with what changed since) or
    /// `whole` (every Ingress gone over).
    pub translate_builds: Family<ResultLabels, Counter>,
    pub snapshot_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub diagnostics: Family<ReasonLabels, Gauge>,
    /// Cluster mode: Unix time of the last event from any watch (an object listed, added, changed or
    /// deleted). Stays 0 in file mode.
    pub kube_last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Cluster mode: failed list or watch calls, by kind; each is retried with backoff.
    pub kube_watch_errors: Family<KindLabels, Counter>,
    /// Cluster mode: objects listed, changed or deleted by the watches, by kind and by whether they
    /// changed what translation reads (`changed`, which wakes the rebuild) or not (`ignored`).
    pub store_events: Family<StoreEventLabels, Counter>,
    /// Cluster mode: lists after a watch's first one, by kind. kube-runtime's watcher lists again
    /// when the API server answers `410 Gone` (the resourceVersion it resumes from was compacted
    /// away), so a rising count says the watches fall behind etcd's history; the relist itself
    /// removes what was deleted meanwhile.
    pub kube_relists: Family<KindLabels, Counter>,
    /// Cluster mode: running watches of single Secrets and ConfigMaps that annotations refer to.
    pub kube_reference_watches: Gauge,
    /// Cluster mode: 1 while this replica holds the election Lease (and so writes status and Events).
    pub leader: Gauge,
    /// Cluster mode: Ingress status patches by result (`ok`, `error`).
    pub status_writes: Family<ResultLabels, Counter>,
    /// Cluster mode: Kubernetes Events published by result (`ok`, `error`).
    pub events_published: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    /// Metrics registered nowhere, for tests.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let snapshot_rebuilds = Family::<ResultLabels, Counter>::default();
        registry.register(
            "snapshot_rebuilds",
            "Snapshot builds by result (ok: published, unchanged: equal to the serving one, error)",
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
        let translate_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "translate_cache",
            "Certificates, backends, Ingress annotations and facts, and hosts' routes a build reused from the last one (hit) or made anew (miss)",
            translate_cache.clone(),
        );
        let translate_builds = Family::<ResultLabels, Counter>::default();
        registry.register(
            "translate_builds",
            "Builds that patched the last one with what changed since (patch), or went over every Ingress (whole)",
            translate_builds.clone(),
        );
        let snapshot_last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "snapshot_last_success_timestamp_seconds",
            "Unix time of the last successful snapshot build",
            snapshot_last_success.clone(),
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
        let store_events = Family::<StoreEventLabels, Counter>::default();
        registry.register(
            "store_events",
            "Watch events by kind and result (changed: translation reads what changed and the snapshot \
             is built again; ignored: nothing translation reads changed)",
            store_events.clone(),
        );
        let kube_relists = Family::<KindLabels, Counter>::default();
        registry.register(
            "kube_relists",
            "Lists of a Kubernetes watch after its first one, by kind (a 410 Gone makes the watch list again)",
            kube_relists.clone(),
        );
        let kube_reference_watches = Gauge::default();
        registry.register(
            "kube_reference_watches",
            "Watches of single Secrets and ConfigMaps that Ingress annotations refer to",
            kube_reference_watches.clone(),
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
            snapshot_rebuilds,
            snapshot_build_duration,
            translate_cache,
            translate_builds,
            snapshot_last_success,
            diagnostics,
            kube_last_sync,
            kube_watch_errors,
            store_events,
            kube_relists,
            kube_reference_watches,
            leader,
            status_writes,
            events_published,
        }
    }
}

/// `gantry_objects{kind}`: the objects Gantry holds (watched in cluster mode, read from the
/// manifests in file mode), by kind, counted at each scrape under the store's lock.
#[derive(Debug)]
pub struct ObjectsCollector(pub Arc<crate::runtime::SharedStore>);

impl Collector for ObjectsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use crate::store::Kind;
        let counts = self
            .0
            .with_state(|s| Kind::ALL.map(|kind| (kind, s.store.count(kind))));
        let mut family = encoder.encode_descriptor(
            "objects",
            "Objects held by kind (watched in cluster mode, read from the manifests in file mode)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, count) in counts {
            let labels = KindLabels { kind: kind.as_str() };
            family
                .encode_family(&labels)?
                .encode_gauge(&i64::try_from(count).unwrap_or(i64::MAX))?;
        }
        Ok(())
    }
}
