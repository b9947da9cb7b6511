//! File mode: a folder of ordinary Kubernetes manifests, watched for changes.
//!
//! Every `.yaml`, `.yml` and `.json` file below the folder is read (hidden files and folders, such as
//! the `..data` links of a mounted ConfigMap, are skipped). A file that does not parse keeps the
//! objects of its last good read; a removed file takes its objects with it. Changes are noticed
//! through inotify and, as a safety net, by a poll every second.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::diagnostic::{Diagnostic, ObjectRef};
use notify::Watcher;
use tokio::sync::{mpsc, watch};

use crate::{
    manifests::{parse_manifests, ParsedFile},
    runtime::{SharedStore, SourceState},
    store::{Change, Kind, Object, ObjectKey, ObjectStore},
};

/// Deepest folder nesting read; deeper folders are ignored.
const MAX_DEPTH: usize = 16;
/// Poll interval of the safety-net rescan.
const POLL: Duration = Duration::from_secs(1);
/// After an inotify event, wait this long for the writer to finish before reading.
const SETTLE: Duration = Duration::from_millis(50);

/// Why the folder cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The folder does not exist or cannot be listed.
    #[error("cannot read manifest folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What we know of one file.
#[derive(Debug)]
struct FileState {
    /// Modification time and length at the last read, for the cheap poll.
    stamp: (Option<SystemTime>, u64),
    contents: Vec<u8>,
    /// Objects of the last read that parsed.
    objects: Vec<Object>,
    /// Problems of the last read (per document, or the whole file).
    diagnostics: Vec<Diagnostic>,
}

/// The state of a manifest folder, turned into the store on every change.
#[derive(Debug, Default)]
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

// === impl ManifestDir ===

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    /// Reads what changed since the last scan. `force` re-reads every file's contents (after an
    /// inotify event, when a same-size rewrite within one mtime tick would fool the stamp).
    /// Returns whether anything changed.
    pub fn scan(&mut self, force: bool) -> Result<bool, Error> {
        let mut found = BTreeSet::new();
        list_files(&self.root, 0, &mut found).map_err(|source| Error::Folder {
            path: self.root.clone(),
            source,
        })?;
        let mut changed = false;
        let before = self.files.len();
        self.files.retain(|p, _| found.contains(p));
        changed |= self.files.len() != before;
        for path in found {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue, // removed between listing and reading
            };
            let stamp = (meta.modified().ok(), meta.len());
            if let Some(f) = self.files.get(&path) {
                if !force && f.stamp == stamp {
                    continue;
                }
            }
            let contents = match std::fs::read(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read manifest file");
                    continue;
                }
            };
            if let Some(f) = self.files.get_mut(&path) {
                f.stamp = stamp;
                if f.contents == contents {
                    continue;
                }
            }
            changed = true;
            let name = path
                .strip_prefix(&self.root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let parsed = std::str::from_utf8(&contents)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(|text| parse_manifests(&name, text).map_err(|e| e.to_string()));
            let entry = self.files.entry(path.clone()).or_insert_with(|| FileState {
                stamp,
                contents: Vec::new(),
                objects: Vec::new(),
                diagnostics: Vec::new(),
            });
            entry.contents = contents;
            match parsed {
                Ok(ParsedFile { objects, diagnostics }) => {
                    entry.objects = objects;
                    entry.diagnostics = diagnostics;
                }
                Err(message) => {
                    // Keep the objects of the last good read: a half-written file must not drop routes.
                    let kept = entry.objects.len();
                    entry.diagnostics = vec![Diagnostic {
                        object: ObjectRef::file(name.clone()),
                        reason: "ManifestParseError".into(),
                        message: format!("{message}; keeping the {kept} object(s) of its last good read"),
                    }];
                }
            }
        }
        Ok(changed)
    }

    /// The store and source diagnostics for the current files. An object defined in two files is
    /// taken from the first file by path, and the other gets a diagnostic.
    pub fn state(&self) -> SourceState {
        let mut store = ObjectStore::new();
        let mut diagnostics = Vec::new();
        let mut seen: BTreeMap<(Kind, ObjectKey), &Path> = BTreeMap::new();
        for (path, file) in &self.files {
            diagnostics.extend(file.diagnostics.iter().cloned());
            for obj in &file.objects {
                let mut key = obj.key();
                if obj.kind().is_namespaced() && key.namespace.is_empty() {
                    key.namespace = crate::store::DEFAULT_NAMESPACE.to_string();
                }
                match seen.get(&(obj.kind(), key.clone())) {
                    Some(first) => diagnostics.push(Diagnostic {
                        object: ObjectRef::of(obj.kind(), &key, obj.metadata()),
                        reason: "DuplicateObject".into(),
                        message: format!(
                            "defined in both {} and {}; using the first",
                            first.display(),
                            path.display()
                        ),
                    }),
                    None => {
                        seen.insert((obj.kind(), key), path);
                        store.apply(obj.clone());
                    }
                }
            }
        }
        SourceState { store, diagnostics }
    }
}

fn list_files(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow links: ConfigMap mounts are links into a hidden folder.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_dir() {
            // A subfolder that vanished or cannot be read is skipped, not fatal.
            let _ = list_files(&path, depth + 1, out);
        } else if meta.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        {
            out.insert(path);
        }
    }
    Ok(())
}

/// Reads the folder once (an error here is fatal: the folder must exist at start), publishes it,
/// then watches it until `shutdown` turns true.
pub async fn run(
    root: PathBuf,
    shared: Arc<SharedStore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let mut dir = ManifestDir::new(root.clone());
    dir.scan(true)?;
    let state = dir.state();
    shared.update(|s| {
        *s = state;
        Change::Read
    });
    shared.mark_synced();

    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            // A full channel already means "rescan"; dropping the extra signal is fine.
            let _ = tx.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => match w.watch(&root, notify::RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the manifest folder; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; polling only");
            None
        }
    };

    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
                _ = poll.tick() => false,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    // Coalesce the burst of events one save makes.
                    while rx.try_recv().is_ok() {}
                    true
                }
            };
            // File I/O and parsing are blocking work.
            let scanned = tokio::task::spawn_blocking(move || {
                let scanned = match dir.scan(force) {
                    Ok(true) => Ok(Some(dir.state())),
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                };
                (dir, scanned)
            })
            .await;
            // The closure does not panic; if it ever did, stop watching and keep the last state.
            let Ok((returned, scanned)) = scanned else { return };
            dir = returned;
            match scanned {
                Ok(Some(state)) => {
                    // A rescan that changed a file: rebuild, the snapshot comparison decides.
                    shared.update(|s| {
                        *s = state;
                        Change::Read
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "manifest folder unreadable; keeping the last good objects")
                }
            }
        }
    }))
}
