//! What one build reuses from the last: the parts of translation that are pure functions of a few
//! objects, kept with the store revisions of the objects they read.
//!
//! - **Certificates**, by Secret: parsing PEM and loading an RSA key is most of a build's CPU when
//!   a thousand Ingresses have TLS.
//! - **Backends**, by Service port and mode: the Service, its EndpointSlices (and in node-port mode
//!   every Node). An EndpointSlice update rebuilds the one backend of that Service; every route to
//!   it gets the new endpoints, and every other backend is the same `Arc` as before.
//! - **Annotations**, by Ingress: the Ingress and the Secrets and ConfigMaps its annotations read.
//!
//! An entry is used only when every revision it was made from is still the store's
//! ([`ObjectStore::revision`] moves exactly when something translation reads of an object
//! changes), so a cached build gives what a build from nothing gives; the property test in
//! `tests/incremental.rs` holds the two equal over random change sequences. Entries that a build
//! did not use are dropped at its end, so the cache never holds more than one build's worth.
//!
//! The rest of a build (which Ingresses are ours and their order, the claims of hosts and paths,
//! canaries, aliases, the route table itself, the Gateway API) depends on every Ingress at once
//! and runs each time; it is cheap next to these.

use std::{collections::HashMap, hash::Hash};

use crate::store::{Kind, ObjectKey, ObjectStore};

/// A memo table kept across builds: `key → (inputs, value)`. A build takes entries out of the
/// last build's table and puts what it used into its own.
pub(super) struct Memo<K, I, V> {
    last: HashMap<K, (I, V)>,
    this: HashMap<K, (I, V)>,
    pub(super) hits: u64,
    pub(super) misses: u64,
}

impl<K, I, V> Default for Memo<K, I, V> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
            this: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, I: PartialEq, V: Clone> Memo<K, I, V> {
    /// The value for `key`: this build's if it has one, else the last build's when `fresh` says
    /// its inputs still hold, else `make`'s (which returns the value and the inputs it read).
    pub(super) fn get(
        &mut self,
        key: &K,
        fresh: impl FnOnce(&I) -> bool,
        make: impl FnOnce() -> (V, I),
    ) -> V {
        if let Some((_, v)) = self.this.get(key) {
            return v.clone();
        }
        let entry = match self.last.remove(key) {
            Some(entry) if fresh(&entry.0) => {
                self.hits += 1;
                entry
            }
            _ => {
                self.misses += 1;
                let (v, inputs) = make();
                (inputs, v)
            }
        };
        let v = entry.1.clone();
        self.this.insert(key.clone(), entry);
        v
    }

    /// Ends a build: what it used is what the next one may reuse.
    fn finish(&mut self) {
        self.last = std::mem::take(&mut self.this);
    }

    pub(super) fn len(&self) -> usize {
        self.last.len() + self.this.len()
    }
}

/// The revisions of the objects one result was made from, in the order they were read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Inputs(Vec<(Kind, ObjectKey, Option<u64>)>);

impl Inputs {
    pub(super) fn read(&mut self, store: &ObjectStore, kind: Kind, key: ObjectKey) {
        let revision = store.revision(kind, &key);
        self.0.push((kind, key, revision));
    }

    /// Whether every object read has the revision it had.
    pub(super) fn hold(&self, store: &ObjectStore) -> bool {
        self.0
            .iter()
            .all(|(kind, key, revision)| store.revision(*kind, key) == *revision)
    }
}

/// Passed from one build to the next by whoever rebuilds (the controller's rebuild loop); a
/// build with a new, empty cache translates everything.
#[derive(Default)]
pub struct TranslateCache {
    pub(super) certs: Memo<ObjectKey, Option<u64>, Result<gantry_proxy::TlsCert, super::tls::SecretError>>,
    pub(super) backends:
        Memo<super::backends::BackendKey, super::backends::BackendInputs, super::backends::Resolved>,
    pub(super) annotations: Memo<ObjectKey, Inputs, std::sync::Arc<crate::annotations::IngressAnnotations>>,
}

/// How much of one build came from the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries held for the next build.
    pub entries: usize,
}

impl TranslateCache {
    /// Ends a build; returns what the build reused and what it made anew.
    pub(super) fn finish(&mut self) -> CacheStats {
        let stats = CacheStats {
            hits: self.certs.hits + self.backends.hits + self.annotations.hits,
            misses: self.certs.misses + self.backends.misses + self.annotations.misses,
            entries: 0,
        };
        self.certs.finish();
        self.backends.finish();
        self.annotations.finish();
        for (hits, misses) in [
            (&mut self.certs.hits, &mut self.certs.misses),
            (&mut self.backends.hits, &mut self.backends.misses),
            (&mut self.annotations.hits, &mut self.annotations.misses),
        ] {
            *hits = 0;
            *misses = 0;
        }
        CacheStats {
            entries: self.certs.len() + self.backends.len() + self.annotations.len(),
            ..stats
        }
    }
}
