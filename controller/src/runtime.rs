//! The controller's loop: sources fill the shared store; a debounced rebuild translates it into a
//! snapshot and publishes it to the proxy.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use gantry_proxy::{metrics::ResultLabels, Diagnostic, Proxy, Readiness};
use tokio::sync::watch;

use crate::{
    store::ObjectStore,
    translate::{translate, TranslateOptions},
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
}

/// The store shared between sources and the rebuild loop.
#[derive(Debug)]
pub struct SharedStore {
    state: Mutex<SourceState>,
    version: watch::Sender<u64>,
    synced: watch::Sender<bool>,
}

// === impl SharedStore ===

impl Default for SharedStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            version: watch::channel(0).0,
            synced: watch::channel(false).0,
        }
    }
}

impl SharedStore {
    /// Changes the store and tells the rebuild loop.
    pub fn update(&self, f: impl FnOnce(&mut SourceState)) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut state);
        }
        self.version.send_modify(|v| *v += 1);
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

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Builds a snapshot from the current store and publishes it. Returns the diagnostics.
pub fn rebuild(shared: &SharedStore, proxy: &Proxy, opts: &TranslateOptions) -> Vec<Diagnostic> {
    let started = Instant::now();
    let previous = proxy.snapshots.load();
    let mut snapshot = shared.with_state(|s| {
        let mut snapshot = translate(&s.store, opts, &previous);
        snapshot.diagnostics.extend(s.diagnostics.iter().cloned());
        snapshot
    });
    snapshot.diagnostics.sort();
    snapshot.diagnostics.dedup();
    let diagnostics = snapshot.diagnostics.clone();
    let (generation, routes) = (snapshot.generation, snapshot.routes.len());
    proxy.publish(snapshot);
    let m = &proxy.metrics;
    m.snapshot_build_duration.observe(started.elapsed().as_secs_f64());
    m.snapshot_rebuilds
        .get_or_create(&ResultLabels { result: "ok" })
        .inc();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    m.snapshot_last_success.set(now.as_secs_f64());
    tracing::info!(
        generation,
        routes,
        diagnostics = diagnostics.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot published"
    );
    diagnostics
}

/// Rebuilds whenever the store changes, debounced; marks the proxy ready after the first build and
/// announces every publish on `published` (nobody listens in file mode). Runs until `shutdown`
/// turns true.
pub async fn rebuild_loop(
    shared: Arc<SharedStore>,
    proxy: Arc<Proxy>,
    opts: Arc<TranslateOptions>,
    readiness: Arc<Readiness>,
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
        let (s, p, o) = (shared.clone(), proxy.clone(), opts.clone());
        // Translation is CPU work that can take a while for large stores: keep it off the threads
        // that serve traffic.
        match tokio::task::spawn_blocking(move || rebuild(&s, &p, &o)).await {
            Ok(diagnostics) => {
                log_new_diagnostics(&reported, &diagnostics);
                readiness.set_ready();
                published.send_replace(Published {
                    generation: proxy.snapshots.load().generation,
                    diagnostics: Arc::from(diagnostics.as_slice()),
                });
                reported = diagnostics;
            }
            Err(e) => {
                // A panic in translation is a bug; the last good snapshot keeps serving.
                tracing::error!(error = %e, "snapshot build failed; keeping the last good snapshot");
                proxy
                    .metrics
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
