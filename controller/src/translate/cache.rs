//! What one build reuses from the last: the parts of translation that are pure functions of a few
//! objects, kept with the store revisions of the objects they read.
//!
//! - **Certificates**, by Secret: parsing PEM and loading an RSA key is most of a build's CPU when
//!   a thousand Ingresses have TLS.
//! - **Backends**, by Service port and mode: the Service, its EndpointSlices (and in node-port mode
//!   every Node). An EndpointSlice update rebuilds the one backend of that Service; every route to
//!   it gets the new endpoints, and every other backend is the same `Arc` as before.
//! - **Ingress facts**, by Ingress: its ingress-nginx annotations, read, and what the processors
//!   read of it besides the spec (parsed hosts, TLS entries, regex hosts, backend mode), from the
//!   Ingress and the Secrets and ConfigMaps its annotations read.
//! - **Hosts' routes**, by host: the compiled `HostTable` of every rule for the host, from the
//!   facts of the host's Ingresses, the host's TLS, regex and client-authentication inputs, and
//!   the backends the routes resolved (`rules::HostInputs`).
//!
//! An entry is used only when every revision it was made from is still the store's
//! ([`ObjectStore::revision`] moves exactly when something translation reads of an object
//! changes), so a cached build gives what a build from nothing gives; the property test in
//! `tests/incremental.rs` holds the two equal over random change sequences. Entries that a build
//! did not use are dropped at its end, so the cache holds about one build's worth (a build that
//! trusts the backends of reused hosts without looking them up keeps every backend entry, for at
//! most [`SWEEP_EVERY`] builds in a row).
//! When no object of a kind changed since the last build ([`Unchanged`]), entries made from that
//! kind are used without looking at each object's revision; after an endpoint change, the store
//! says which Services it touched, and only their backends are looked at.
//!
//! The rest of a build (which Ingresses are ours and their order, grouping rules by host,
//! canaries, aliases, the default backend, assembling the route table from the hosts' tables, the
//! Gateway API) runs each time; per Ingress it is a memo lookup and a few hash inserts.

use std::{collections::HashMap, hash::Hash};

use crate::store::{Kind, Mark, ObjectKey, ObjectStore};

/// A memo table kept across builds: `key → (inputs, value)`, each entry stamped with the last
/// build that used it. One map and one hash lookup per use; a key is copied only when it is new.
pub(super) struct Memo<K, I, V> {
    map: HashMap<K, Entry<I, V>, foldhash::fast::RandomState>,
    /// The build in progress (entries used by it carry this stamp).
    build: u64,
    /// This build used entries without stamping them ([`Self::skip_stamps`]), so its end must
    /// not drop what it did not stamp.
    unstamped: bool,
    /// Builds ended without a sweep since the last one.
    unswept: u32,
    pub(super) hits: u64,
    pub(super) misses: u64,
}

/// At most this many builds in a row may skip stamping a memo's entries
/// ([`Memo::skip_stamps`]); then one looks at every entry it uses, and what it did not use goes.
const SWEEP_EVERY: u32 = 32;

struct Entry<I, V> {
    inputs: I,
    value: V,
    used: u64,
}

impl<K, I, V> Default for Memo<K, I, V> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
            build: 1,
            unstamped: false,
            unswept: 0,
            hits: 0,
            misses: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, I, V: Clone> Memo<K, I, V> {
    /// The value for `key`: this build's if it has one, else the last build's when `fresh` says
    /// its inputs still hold, else `make`'s (which returns the value and the inputs it read).
    pub(super) fn get(
        &mut self,
        key: &K,
        fresh: impl FnOnce(&I) -> bool,
        make: impl FnOnce() -> (V, I),
    ) -> V {
        if let Some(v) = self.lookup(key, |inputs, _| fresh(inputs)) {
            return v;
        }
        let (v, inputs) = make();
        self.store(key, inputs, v.clone());
        v
    }

    /// The value for `key` if this build has one, or the last build's when `fresh` says it still
    /// holds (then it is this build's too). `None`: make it and [`Self::store`] it.
    pub(super) fn lookup(&mut self, key: &K, fresh: impl FnOnce(&I, &V) -> bool) -> Option<V> {
        let build = self.build;
        let entry = self.map.get_mut(key)?;
        if entry.used == build {
            return Some(entry.value.clone());
        }
        if !fresh(&entry.inputs, &entry.value) {
            return None;
        }
        entry.used = build;
        self.hits += 1;
        Some(entry.value.clone())
    }

    /// Drops the entry for `key` (whose object is gone), for a build that does not sweep.
    pub(super) fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Keeps what this build made for `key`.
    pub(super) fn store(&mut self, key: &K, inputs: I, value: V) {
        self.misses += 1;
        let entry = Entry {
            inputs,
            value,
            used: self.build,
        };
        match self.map.get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                self.map.insert(key.clone(), entry);
            }
        }
    }

    /// Whether this build may use entries it knows to hold without looking them up (and so
    /// without stamping them): true unless a sweep is due. Call [`Self::skip_stamps`] when it
    /// does.
    pub(super) fn may_skip_stamps(&self) -> bool {
        self.unswept < SWEEP_EVERY
    }

    /// This build relies on entries it did not look up: its end keeps every entry. (A host whose
    /// routes are reused holds its backends' `Arc`s already; looking each backend up only to
    /// stamp it, when no Service, EndpointSlice or Node changed, was a tenth of a build.)
    pub(super) fn skip_stamps(&mut self) {
        self.unstamped = true;
    }

    /// Ends a build: what it used is what the next one may reuse; the rest is dropped, unless
    /// the build used entries without stamping them (then the next sweep drops what is unused).
    fn finish(&mut self) {
        let build = self.build;
        if self.unstamped {
            self.unswept += 1;
        } else {
            self.map.retain(|_, e| e.used == build);
            self.unswept = 0;
        }
        self.unstamped = false;
        self.build += 1;
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
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

    /// Whether every object read has the revision it had; objects of the kinds `unchanged` says
    /// no object of changed since the last build are not looked at.
    pub(super) fn hold(&self, store: &ObjectStore, unchanged: &Unchanged) -> bool {
        self.0
            .iter()
            .all(|(kind, key, revision)| unchanged.kind(*kind) || store.revision(*kind, key) == *revision)
    }
}

/// The kinds a build may trust whole: no object of them changed, came or went since the last
/// build with this cache ([`ObjectStore::kind_revision`] is the same), so every result made from
/// them alone still holds without looking at each object's revision. Revisions are unique in the
/// process, so a different store never looks unchanged.
#[derive(Clone, Debug, Default)]
pub(super) struct Unchanged {
    /// Services, EndpointSlices and Nodes: what a backend is made from.
    pub(super) backends: bool,
    /// When some Service or EndpointSlice changed but no Node did, and the store could say which
    /// Services that touched ([`ObjectStore::services_touched_since`]): those. The backends of
    /// every other Service still hold.
    pub(super) touched_services: Option<foldhash::HashSet<ObjectKey>>,
    pub(super) secrets: bool,
    pub(super) config_maps: bool,
}

/// The kinds [`Unchanged`] follows.
const FOLLOWED: [Kind; 5] = [
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Node,
    Kind::Secret,
    Kind::ConfigMap,
];

impl Unchanged {
    /// Whether a backend of `service` may be other than the last build's: not when no Service,
    /// EndpointSlice or Node changed, nor when the Services that changed are known and this is
    /// not one of them.
    pub(super) fn service_may_have_changed(&self, service: &ObjectKey) -> bool {
        !self.backends
            && self
                .touched_services
                .as_ref()
                .is_none_or(|touched| touched.contains(service))
    }

    fn kind(&self, kind: Kind) -> bool {
        match kind {
            Kind::Service | Kind::EndpointSlice | Kind::Node => self.backends,
            Kind::Secret => self.secrets,
            Kind::ConfigMap => self.config_maps,
            _ => false,
        }
    }
}

/// Passed from one build to the next by whoever rebuilds (the controller's rebuild loop); a
/// build with a new, empty cache translates everything.
#[derive(Default)]
pub struct TranslateCache {
    pub(super) certs: Memo<ObjectKey, Option<u64>, Result<gantry_proxy::TlsCert, super::tls::SecretError>>,
    pub(super) backends:
        Memo<super::backends::BackendKey, super::backends::BackendInputs, super::backends::Resolved>,
    pub(super) ingresses:
        Memo<ObjectKey, super::class::FactsInputs, std::sync::Arc<super::class::IngressFacts>>,
    pub(super) hosts:
        Memo<gantry_proxy::HostMatch, super::rules::HostInputs, std::sync::Arc<super::rules::HostUnit>>,
    /// The last build's certificates by SNI name, while every `spec.tls` Secret loads.
    pub(super) sni: Option<super::tls::SniInputs>,
    /// The kind revisions of [`FOLLOWED`] the last build saw.
    kinds: Option<[u64; 5]>,
    /// Where in the store's history the last build was.
    mark: Option<Mark>,
    /// What the last build made, kept for the next to patch ([`super::patch`]), when it may.
    pub(super) prior: Option<super::patch::Prior>,
    /// Routes' policies lately made, to share (see [`PolicyPool`]).
    pub(super) policies: PolicyPool,
}

/// The routes' [`Policies`](gantry_proxy::Policies) lately seen, so that routes asking for the
/// same share one `Arc`: most routes of a cluster ask for one of a few (no annotation, with or
/// without the TLS redirect), and each route's own copy was most of its 650 bytes. A small
/// list compared by value rather than a map: `Policies` has no hash, and a build asks once per
/// route.
#[derive(Default)]
pub(super) struct PolicyPool {
    /// Most recently used last.
    recent: Vec<std::sync::Arc<gantry_proxy::Policies>>,
}

/// How many distinct policies [`PolicyPool`] remembers.
const POLICY_POOL: usize = 8;

impl PolicyPool {
    /// `policies`, as an `Arc` shared with every route that asked for the same lately.
    pub(super) fn share(
        &mut self,
        policies: gantry_proxy::Policies,
    ) -> std::sync::Arc<gantry_proxy::Policies> {
        if let Some(i) = self.recent.iter().rposition(|p| **p == policies) {
            let shared = self.recent.remove(i);
            self.recent.push(shared.clone());
            return shared;
        }
        if self.recent.len() == POLICY_POOL {
            self.recent.remove(0);
        }
        let shared = std::sync::Arc::new(policies);
        self.recent.push(shared.clone());
        shared
    }
}

/// How much of one build came from the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries held for the next build.
    pub entries: usize,
    /// The build patched the last one ([`super::patch`]) rather than going over every Ingress.
    pub patched: bool,
}

impl TranslateCache {
    /// Starts a build on `store`: which kinds did not change since the last one.
    pub(super) fn start(&mut self, store: &ObjectStore) -> Unchanged {
        let unchanged = self.peek(store);
        self.advance(store);
        unchanged
    }

    /// Which kinds did not change since the last build, without starting one.
    pub(super) fn peek(&self, store: &ObjectStore) -> Unchanged {
        let now = FOLLOWED.map(|kind| store.kind_revision(kind));
        let same = |i: std::ops::Range<usize>| self.kinds.is_some_and(|last| last[i.clone()] == now[i]);
        let backends = same(0..3);
        // An endpoint change touches one Service: say which, so that the backends of the others
        // are not looked at. Nodes are every node-port backend's endpoints, so not after a Node
        // change.
        let touched_services = match self.mark {
            Some(mark) if !backends && same(2..3) => store
                .services_touched_since(mark)
                .map(|touched| touched.cloned().collect()),
            _ => None,
        };
        Unchanged {
            backends,
            touched_services,
            secrets: same(3..4),
            config_maps: same(4..5),
        }
    }

    /// The next build starts from the store as it is now.
    pub(super) fn advance(&mut self, store: &ObjectStore) {
        self.kinds = Some(FOLLOWED.map(|kind| store.kind_revision(kind)));
        self.mark = Some(store.mark());
    }

    /// Where in the store's history the last build was.
    pub(super) fn last_mark(&self) -> Option<Mark> {
        self.mark
    }

    /// Ends a build; returns what the build reused and what it made anew.
    pub(super) fn finish(&mut self) -> CacheStats {
        let stats = CacheStats {
            hits: self.certs.hits + self.backends.hits + self.ingresses.hits + self.hosts.hits,
            misses: self.certs.misses + self.backends.misses + self.ingresses.misses + self.hosts.misses,
            entries: 0,
            patched: false,
        };
        self.certs.finish();
        self.backends.finish();
        self.ingresses.finish();
        self.hosts.finish();
        for (hits, misses) in [
            (&mut self.certs.hits, &mut self.certs.misses),
            (&mut self.backends.hits, &mut self.backends.misses),
            (&mut self.ingresses.hits, &mut self.ingresses.misses),
            (&mut self.hosts.hits, &mut self.hosts.misses),
        ] {
            *hits = 0;
            *misses = 0;
        }
        CacheStats {
            entries: self.certs.len() + self.backends.len() + self.ingresses.len() + self.hosts.len(),
            ..stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memo_with(keys: &[u32]) -> Memo<u32, (), u32> {
        let mut memo = Memo::default();
        for &k in keys {
            memo.get(&k, |_| true, || (k, ()));
        }
        memo.finish();
        memo
    }

    #[test]
    fn a_build_drops_what_it_did_not_use_unless_it_skipped_stamps() {
        let mut memo = memo_with(&[1, 2, 3]);
        assert_eq!(memo.get(&1, |_| true, || unreachable!()), 1);
        memo.finish();
        assert_eq!(memo.len(), 1, "2 and 3 were not used");

        let mut memo = memo_with(&[1, 2, 3]);
        memo.skip_stamps();
        memo.finish();
        assert_eq!(memo.len(), 3, "a build that skipped stamps keeps every entry");
    }

    #[test]
    fn skipping_stamps_is_bounded_by_a_sweep() {
        let mut memo = memo_with(&[1, 2, 3]);
        let mut skipped = 0;
        while memo.may_skip_stamps() && skipped < 10 * SWEEP_EVERY {
            memo.skip_stamps();
            memo.finish();
            skipped += 1;
        }
        assert_eq!(skipped, SWEEP_EVERY, "a sweep is due after SWEEP_EVERY builds");
        assert_eq!(memo.len(), 3);
        // The due build looks at what it uses (1 only) and sweeps the rest.
        memo.get(&1, |_| true, || unreachable!());
        memo.finish();
        assert_eq!(memo.len(), 1);
        assert!(memo.may_skip_stamps(), "the count starts again after a sweep");
    }
}
