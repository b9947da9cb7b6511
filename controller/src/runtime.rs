//! The controller's loop: sources fill the shared store; a debounced rebuild translates it into a
//! snapshot and publishes it to the proxy.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use gantry_proxy::Dataplane;
use tokio::sync::watch;

use crate::{
    diagnostic::Diagnostic,
    metrics::{Metrics, ReasonLabels, ResultLabels},
    store::{Change, ObjectStore},
    translate::{gateway::GatewayApiStatus, translate, IngressReport, TranslateOptions},
};

/// Wait this long after a change for more changes before rebuilding...
pub const HOLD_OFF: Duration = Duration::from_millis(100);
/// ...but never longer than this after the first change, so a steady stream of changes still
/// gets built.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// What the sources have gathered: the objects, and problems found before translation (files
/// that do not parse, documents that are not valid objects).
#[derive(Debug, Default)]
pub struct SourceState {
    pub store: ObjectStore,
    pub diagnostics: Vec<Diagnostic>,
}

/// What the rebuild loop announces after each publish, for the cluster-mode writers (Ingress status,
/// Events): the generation now serving and its diagnostics.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// 0 until the first snapshot is published.
    pub generation: u64,
    pub diagnostics: Arc<[Diagnostic]>,
    /// What the ingress-nginx annotations of each Ingress served did (`/debug/routes`).
    pub annotations: Arc<[IngressReport]>,
    /// The status of the Gateway API objects of Gantry's classes, as this build decided it.
    pub gateway: Arc<GatewayApiStatus>,
}

/// What one rebuild found: its diagnostics and the annotation reports.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub diagnostics: Vec<Diagnostic>,
    pub annotations: Vec<IngressReport>,
    pub gateway: GatewayApiStatus,
}

/// The store shared between sources and the rebuild loop.
#[derive(Debug)]
pub struct SharedStore {
    state: Mutex<SourceState>,
    version: watch::Sender<u64>,
    /// Moves on [`Change::Status`]: for the status writers, which otherwise wake on builds only.
    status: watch::Sender<u64>,
    synced: watch::Sender<bool>,
}

// === impl SharedStore ===

impl Default for SharedStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            version: watch::channel(0).0,
            status: watch::channel(0).0,
            synced: watch::channel(false).0,
        }
    }
}

impl SharedStore {
    /// Changes the store; `f` says what it changed. Only [`Change::Read`] wakes the rebuild loop
    /// (a change to the diagnostics is one too: they are published); [`Change::Status`] wakes the
    /// status writers ([`Self::subscribe_status`]); [`Change::Unchanged`] wakes nobody.
    pub fn update(&self, f: impl FnOnce(&mut SourceState) -> Change) -> Change {
        let change = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut state)
        };
        match change {
            Change::Read => self.version.send_modify(|v| *v += 1),
            Change::Status => self.status.send_modify(|v| *v += 1),
            Change::Unchanged => {}
        }
        change
    }

    /// Marks the initial listing complete: the first snapshot is built only after this, so it never
    /// serves a partial view.
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&SourceState) -> T) -> T {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&state)
    }

    /// Changes when translation reads something that changed: the rebuild loop's signal.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Changes when only a status that Gantry writes changed (by Gantry or by someone else), which
    /// builds nothing: the status writers wake on it to compare again.
    pub fn subscribe_status(&self) -> watch::Receiver<u64> {
        self.status.subscribe()
    }
}

/// Builds a snapshot from the current store and publishes it, unless it equals the serving one.
/// Returns the diagnostics and annotation reports of the build (which may change even when the
/// snapshot does not).
pub fn rebuild(
    shared: &SharedStore,
    dataplane: &Dataplane,
    metrics: &Metrics,
    opts: &TranslateOptions,
) -> Rebuilt {
    let started = Instant::now();
    let previous = dataplane.current();
    let mut translation = shared.with_state(|s| {
        let mut t = translate(&s.store, opts, &previous);
        t.diagnostics.extend(s.diagnostics.iter().cloned());
        t
    });
    translation.diagnostics.sort();
    translation.diagnostics.dedup();
    let diagnostics = std::mem::take(&mut translation.diagnostics);
    let annotations = std::mem::take(&mut translation.annotations);
    let gateway = std::mem::take(&mut translation.gateway);
    let routes = translation.snapshot.routes.len();
    let published = dataplane.publish(translation.snapshot);
    let result = if published { "ok" } else { "unchanged" };
    metrics
        .snapshot_build_duration
        .observe(started.elapsed().as_secs_f64());
    metrics
        .snapshot_rebuilds
        .get_or_create(&ResultLabels { result })
        .inc();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    metrics.snapshot_last_success.set(now.as_secs_f64());
    metrics.diagnostics.clear();
    for d in &diagnostics {
        metrics
            .diagnostics
            .get_or_create(&ReasonLabels {
                reason: d.reason.clone(),
            })
            .inc();
    }
    tracing::info!(
        generation = dataplane.current().generation,
        published,
        routes,
        diagnostics = diagnostics.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot built"
    );
    Rebuilt {
        diagnostics,
        annotations,
        gateway,
    }
}

/// Rebuilds whenever the store changes, debounced; the data plane turns ready with the first
/// build. Announces every build on `published` (nobody listens in file mode). Runs until
/// `shutdown` turns true.
pub async fn rebuild_loop(
    shared: Arc<SharedStore>,
    dataplane: Arc<Dataplane>,
    metrics: Metrics,
    opts: Arc<TranslateOptions>,
    published: watch::Sender<Published>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut synced = shared.synced.subscribe();
    let mut changes = shared.subscribe();
    tokio::select! {
        _ = gantry_proxy::shutdown_requested(&mut synced) => {}
        _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
    }
    let mut reported: Vec<Diagnostic> = Vec::new();
    loop {
        changes.mark_unchanged();
        let (s, d, m, o) = (shared.clone(), dataplane.clone(), metrics.clone(), opts.clone());
        // Translation is CPU work that can take a while for large stores: keep it off the threads
        // that serve traffic.
        match tokio::task::spawn_blocking(move || rebuild(&s, &d, &m, &o)).await {
            Ok(Rebuilt {
                diagnostics,
                annotations,
                gateway,
            }) => {
                log_new_diagnostics(&reported, &diagnostics);
                published.send_replace(Published {
                    generation: dataplane.current().generation,
                    diagnostics: Arc::from(diagnostics.as_slice()),
                    annotations: Arc::from(annotations),
                    gateway: Arc::new(gateway),
                });
                reported = diagnostics;
            }
            Err(e) => {
                // A panic in translation is a bug; the last good snapshot keeps serving.
                tracing::error!(error = %e, "snapshot build failed; keeping the last good snapshot");
                metrics
                    .snapshot_rebuilds
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
            }
        }
        // Wait for a change, then debounce.
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
        }
        let first = tokio::time::Instant::now();
        loop {
            let deadline = (tokio::time::Instant::now() + HOLD_OFF).min(first + MAX_DELAY);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                r = changes.changed() => if r.is_err() { return },
            }
            if tokio::time::Instant::now() >= first + MAX_DELAY {
                break;
            }
        }
    }
}

/// Logs each diagnostic once, when it first appears.
fn log_new_diagnostics(before: &[Diagnostic], now: &[Diagnostic]) {
    for d in now {
        if before.binary_search(d).is_err() {
            tracing::warn!(object = %d.object, reason = %d.reason, "{}", d.message);
        }
    }
}
