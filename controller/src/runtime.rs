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
    translate::{
        gateway::GatewayApiStatus, translate_cached, IngressReport, Served, TranslateCache, TranslateOptions,
    },
};

/// A change that comes while a build runs, or less than this after one, is part of a burst: its
/// build waits until no change came for this long. See [`Debounce`].
pub const HOLD_OFF: Duration = Duration::from_millis(100);
/// ...but never longer than this after the first change of the burst, so a steady stream of
/// changes still gets built.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// How long the status writers let a burst of status-only changes settle before they compare
/// again (after a build they compare at once).
pub const STATUS_SETTLE: Duration = Duration::from_secs(1);

/// For the status writers, woken by [`SharedStore::subscribe_status`]: status events come in
/// bursts, most of them their own writes coming back (one per object), and every look compares
/// every object, so they look once per burst: after [`STATUS_SETTLE`]. `false` on shutdown.
pub async fn settle_status(
    statuses: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(STATUS_SETTLE) => {}
        _ = gantry_proxy::shutdown_requested(shutdown) => return false,
    }
    statuses.mark_unchanged();
    true
}

/// What the sources have gathered: the objects, and problems found before translation (files
/// that do not parse, documents that are not valid objects).
#[derive(Debug, Default)]
pub struct SourceState {
    pub store: ObjectStore,
    pub diagnostics: Vec<Diagnostic>,
}

/// What the rebuild loop announces after each build, for the cluster-mode writers (Ingress status,
/// Events): the generation now serving, and what the build that gave it found. The writers work
/// from this alone, not from the store as it may be by then: the Ingresses written to are those
/// served, and Events go to the very object versions translated.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// 0 until the first snapshot is published.
    pub generation: u64,
    pub diagnostics: Arc<[Diagnostic]>,
    /// The Ingresses served, oldest first: those whose status lists Gantry's addresses.
    pub served: Arc<[Arc<Served>]>,
    /// What the ingress-nginx annotations of each Ingress served did (`/debug/routes`).
    pub annotations: Arc<[Arc<IngressReport>]>,
    /// The status of the Gateway API objects of Gantry's classes, as this build decided it.
    pub gateway: Arc<GatewayApiStatus>,
}

/// What one rebuild found: its diagnostics, the Ingresses it serves and the annotation reports.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub diagnostics: Vec<Diagnostic>,
    pub served: Vec<Arc<Served>>,
    pub annotations: Vec<Arc<IngressReport>>,
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
    cache: &mut TranslateCache,
) -> Rebuilt {
    let started = Instant::now();
    let previous = dataplane.current();
    let mut translation = shared.with_state(|s| {
        let mut t = translate_cached(&s.store, opts, &previous, cache);
        t.diagnostics.extend(s.diagnostics.iter().cloned());
        t
    });
    translation.diagnostics.sort();
    translation.diagnostics.dedup();
    let diagnostics = std::mem::take(&mut translation.diagnostics);
    let served = std::mem::take(&mut translation.served);
    let annotations = std::mem::take(&mut translation.annotations);
    let gateway = std::mem::take(&mut translation.gateway);
    let routes = translation.snapshot.routes.len();
    for (result, n) in [
        ("hit", translation.cache.hits),
        ("miss", translation.cache.misses),
    ] {
        metrics
            .translate_cache
            .get_or_create(&ResultLabels { result })
            .inc_by(n);
    }
    let patched = translation.cache.patched;
    metrics
        .translate_builds
        .get_or_create(&ResultLabels {
            result: if patched { "patch" } else { "whole" },
        })
        .inc();
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
        patched,
        routes,
        diagnostics = diagnostics.len(),
        // To the hundredth of a millisecond: a patched build takes less than one.
        elapsed_ms = (started.elapsed().as_secs_f64() * 1e5).round() / 1e2,
        "snapshot built"
    );
    Rebuilt {
        diagnostics,
        served,
        annotations,
        gateway,
    }
}

/// Rebuilds whenever the store changes, debounced ([`Debounce`]); the data plane turns ready with
/// the first build. Announces every build on `published` (nobody listens in file mode). Runs until
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
    let mut debounce = Debounce::new(shared.subscribe());
    tokio::select! {
        _ = gantry_proxy::shutdown_requested(&mut synced) => {}
        _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
    }
    let mut reported: Vec<Diagnostic> = Vec::new();
    // What each build leaves for the next (moved into the blocking task and back).
    let mut cache = TranslateCache::default();
    loop {
        debounce.building();
        let (s, d, m, o) = (shared.clone(), dataplane.clone(), metrics.clone(), opts.clone());
        let mut c = std::mem::take(&mut cache);
        // Translation is CPU work that can take a while for large stores: keep it off the threads
        // that serve traffic.
        match tokio::task::spawn_blocking(move || (rebuild(&s, &d, &m, &o, &mut c), c)).await {
            Ok((
                Rebuilt {
                    diagnostics,
                    served,
                    annotations,
                    gateway,
                },
                c,
            )) => {
                cache = c;
                log_new_diagnostics(&reported, &diagnostics);
                published.send_replace(Published {
                    generation: dataplane.current().generation,
                    diagnostics: Arc::from(diagnostics.as_slice()),
                    served: Arc::from(served),
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
        if !debounce.next(&mut shutdown).await {
            return;
        }
    }
}

/// When the rebuild loop builds again after a change, latency first:
///
/// - **A change after a quiet period** is built at once, without waiting: a lone edit is served
///   as soon as translation allows. The quiet period is as long as the last build took, at most
///   [`HOLD_OFF`]: changes made one after another, each waiting for the last to be served (a
///   deploy pipeline, an operator at work), are each built at once.
/// - **A change within the quiet period** is built when the period ends, with every change that
///   came meanwhile. So the builds of a steady stream of changes take at most half of one CPU.
/// - **A burst** (changes that come while a build runs) is built once no change came for
///   [`HOLD_OFF`], but never later than [`MAX_DELAY`] after its first change. A change made during
///   a build counts from that build's start (the loop cannot tell when during the build it came,
///   and the start is the earliest it can have), so a build that took longer than [`MAX_DELAY`] is
///   followed at once by the next.
///
/// So no change waits longer than [`MAX_DELAY`] plus the build in progress.
struct Debounce {
    /// The store's version: it moves only on changes translation reads.
    changes: watch::Receiver<u64>,
    /// When the last build started.
    started: tokio::time::Instant,
}

// === impl Debounce ===

impl Debounce {
    fn new(changes: watch::Receiver<u64>) -> Self {
        Self {
            changes,
            started: tokio::time::Instant::now(),
        }
    }

    /// A build starts: it sees every change made so far; later ones are for the next build.
    fn building(&mut self) {
        self.changes.mark_unchanged();
        self.started = tokio::time::Instant::now();
    }

    /// After a build: waits until the next build is due. `false` when `shutdown` turned true or
    /// the store is gone.
    async fn next(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        use tokio::time::Instant;
        let finished = Instant::now();
        let quiet = finished.duration_since(self.started).min(HOLD_OFF);
        let first = match self.changes.has_changed() {
            Ok(true) => self.started,
            Ok(false) => {
                tokio::select! {
                    r = self.changes.changed() => if r.is_err() { return false },
                    _ = gantry_proxy::shutdown_requested(shutdown) => return false,
                }
                // At once after a quiet period, else when it ends.
                tokio::select! {
                    _ = tokio::time::sleep_until(finished + quiet) => return true,
                    _ = gantry_proxy::shutdown_requested(shutdown) => return false,
                }
            }
            Err(_) => return false,
        };
        let mut last = Instant::now();
        loop {
            let deadline = (last + HOLD_OFF).min(first + MAX_DELAY);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                r = self.changes.changed() => if r.is_err() { return false },
                _ = gantry_proxy::shutdown_requested(shutdown) => return false,
            }
            last = Instant::now();
            if last >= first + MAX_DELAY {
                return true;
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

#[cfg(test)]
mod tests {
    use tokio::{
        sync::mpsc,
        time::{sleep, timeout, Instant},
    };

    use super::*;

    /// The rebuild loop's timing around a build that takes `build_time`: returns the store's
    /// version (to make changes) and the start of every build, as they happen.
    struct Harness {
        version: watch::Sender<u64>,
        builds: mpsc::UnboundedReceiver<Instant>,
        shutdown: watch::Sender<bool>,
    }

    impl Harness {
        fn start(build_time: Duration) -> Self {
            let (version, changes) = watch::channel(0);
            let (shutdown_tx, mut shutdown) = watch::channel(false);
            let (built, builds) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut debounce = Debounce::new(changes);
                loop {
                    debounce.building();
                    let _ = built.send(Instant::now());
                    sleep(build_time).await;
                    if !debounce.next(&mut shutdown).await {
                        return;
                    }
                }
            });
            Self {
                version,
                builds,
                shutdown: shutdown_tx,
            }
        }

        /// Changes the store now and says when.
        fn change(&self) -> Instant {
            self.version.send_modify(|v| *v += 1);
            Instant::now()
        }

        /// The start of the next build (time runs until there is one).
        async fn next_build(&mut self) -> Instant {
            self.builds.recv().await.expect("the loop runs")
        }

        /// No build starts in the next ten seconds.
        async fn assert_no_build(&mut self) {
            let more = timeout(Duration::from_secs(10), self.builds.recv()).await;
            assert!(more.is_err(), "an unexpected build: {more:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_quiet_period_is_built_at_once() {
        let mut h = Harness::start(Duration::from_millis(30));
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        let changed = h.change();
        assert_eq!(h.next_build().await, changed, "no hold-off for a lone change");
        h.assert_no_build().await;
        // Quiet again (the ten seconds without a build): at once again.
        let changed = h.change();
        assert_eq!(h.next_build().await, changed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_within_the_quiet_period_waits_for_its_end() {
        let build = Duration::from_millis(30);
        let mut h = Harness::start(build);
        let started = h.next_build().await;
        // The build ends at 30 ms; a change 10 ms later is built when the quiet period (as long
        // as the build) ends, 60 ms after the build started.
        sleep(build + Duration::from_millis(10)).await;
        h.change();
        assert_eq!(h.next_build().await, started + build + build);
        h.assert_no_build().await;
        // A build longer than HOLD_OFF: the quiet period is HOLD_OFF.
        let build = Duration::from_millis(400);
        let mut h = Harness::start(build);
        let started = h.next_build().await;
        sleep(build + Duration::from_millis(10)).await;
        h.change();
        assert_eq!(h.next_build().await, started + build + HOLD_OFF);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_made_one_after_another_are_each_built_at_once() {
        // Each change comes once the last one is served (its build of 20 ms done, then 10 ms for
        // the client to see it and make the next): no hold-off for any of them.
        let build = Duration::from_millis(20);
        let mut h = Harness::start(build);
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        for _ in 0..50 {
            let changed = h.change();
            assert_eq!(h.next_build().await, changed, "built at once");
            sleep(build + build).await;
        }
        h.assert_no_build().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_during_a_build_is_built_once_when_it_settles() {
        let build = Duration::from_millis(30);
        let mut h = Harness::start(build);
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        let first = h.change();
        assert_eq!(h.next_build().await, first);
        let mut last = first;
        for _ in 0..5 {
            sleep(Duration::from_millis(20)).await;
            last = h.change();
        }
        assert_eq!(
            h.next_build().await,
            last + HOLD_OFF,
            "one build for the rest of the burst"
        );
        h.assert_no_build().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_changes_faster_than_the_builds_is_built_at_least_every_max_delay() {
        let build = Duration::from_millis(5);
        let mut h = Harness::start(build);
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        // A change every 2 ms for 3 s: the hold-off alone would never be reached.
        let mut changes = Vec::new();
        for _ in 0..1500 {
            changes.push(h.change());
            sleep(Duration::from_millis(2)).await;
        }
        let mut builds = Vec::new();
        while let Ok(Some(b)) = timeout(Duration::from_secs(10), h.builds.recv()).await {
            builds.push(b);
        }
        for c in &changes {
            let built = builds.iter().find(|b| *b > c).expect("every change is built");
            assert!(
                *built - *c <= MAX_DELAY + build,
                "a change waited {:?}",
                *built - *c
            );
        }
        assert!(
            builds.len() <= 3000 / MAX_DELAY.as_millis() as usize + 2,
            "{} builds for 1,500 changes",
            builds.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_builds_of_a_steady_stream_take_at_most_half_of_the_time() {
        // Builds of 20 ms and a change every 25 ms, each landing in the quiet period of the
        // build before: every build waits out its quiet period.
        let build = Duration::from_millis(20);
        let mut h = Harness::start(build);
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        let from = Instant::now();
        for _ in 0..120 {
            h.change();
            sleep(Duration::from_millis(25)).await;
        }
        let mut builds = Vec::new();
        while let Ok(Some(b)) = timeout(Duration::from_secs(10), h.builds.recv()).await {
            builds.push(b);
        }
        let span = builds.last().unwrap().duration_since(from) + build;
        assert!(
            build * builds.len() as u32 <= span / 2 + build,
            "{} builds of {build:?} in {span:?}",
            builds.len()
        );
        for pair in builds.windows(2) {
            assert!(pair[1] - pair[0] >= build + build, "{:?}", pair[1] - pair[0]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_a_build_is_built_after_it_within_max_delay_of_the_builds_start() {
        let mut h = Harness::start(Duration::from_millis(300));
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        let started = h.change();
        assert_eq!(h.next_build().await, started);
        sleep(Duration::from_millis(100)).await;
        h.change();
        // The build ends at 300 ms; the hold-off runs from there.
        assert_eq!(
            h.next_build().await,
            started + Duration::from_millis(300) + HOLD_OFF
        );

        let mut h = Harness::start(Duration::from_millis(600));
        h.next_build().await;
        sleep(Duration::from_secs(1)).await;
        let started = h.change();
        assert_eq!(h.next_build().await, started);
        sleep(Duration::from_millis(100)).await;
        h.change();
        // The build took longer than MAX_DELAY: the next one starts as it ends.
        assert_eq!(h.next_build().await, started + Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_ends_onshutdown() {
        let mut h = Harness::start(Duration::ZERO);
        h.next_build().await;
        h.shutdown.send_replace(true);
        assert_eq!(
            h.builds.recv().await,
            None,
            "the loop returned and dropped its sender"
        );
    }

    #[test]
    fn only_changes_translation_reads_wake_the_rebuild_loop() {
        let shared = SharedStore::default();
        let mut rebuilds = shared.subscribe();
        let mut statuses = shared.subscribe_status();
        shared.update(|_| Change::Unchanged);
        assert!(!rebuilds.has_changed().unwrap_or(true));
        assert!(!statuses.has_changed().unwrap_or(true));
        shared.update(|_| Change::Status);
        assert!(!rebuilds.has_changed().unwrap_or(true));
        assert!(statuses.has_changed().unwrap_or(false));
        statuses.mark_unchanged();
        shared.update(|_| Change::Read);
        assert!(rebuilds.has_changed().unwrap_or(false));
        assert!(
            !statuses.has_changed().unwrap_or(true),
            "a build wakes the status writers"
        );
        rebuilds.mark_unchanged();
    }
}
