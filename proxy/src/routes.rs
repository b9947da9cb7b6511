//! The route table: host → path → route.
//!
//! CONTRACT (filled in by the routing work; the signatures are what the rest of Gantry uses):
//! - hosts: exact hosts in a hash map, wildcard `*.example.com` by parent domain (exactly one extra
//!   label), then rules without host. The most specific matching host wins and only its paths are
//!   considered; no fall-through to a less specific host. When no path matches, the default backend.
//! - paths per host: a `matchit::Router`; Prefix `/a/b` matches `/a/b`, `/a/b/`, `/a/b/...`, never
//!   `/a/bc`; a trailing slash in a Prefix rule is ignored; the longest path wins; on equal length
//!   Exact beats Prefix.

use std::sync::Arc;

use crate::backend::Backend;

/// Which `Host` values a set of rules applies to. Built by the controller; hosts are lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// `foo.example.com`
    Exact(String),
    /// `*.example.com`, stored as the parent domain `example.com`: matches one extra label.
    Wildcard(String),
    /// A rule without host: applies to every host that has no match of its own.
    Any,
}

/// A path rule. Precedence (longest first, then Exact over Prefix) is derived from this.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMatch {
    Exact(String),
    /// Also used for `ImplementationSpecific`.
    Prefix(String),
}

/// Where a route came from: the Ingress (or other object) that declared it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteSource {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// What a matched request does.
#[derive(Debug)]
pub struct Route {
    pub path: PathMatch,
    pub backend: Arc<Backend>,
    pub source: RouteSource,
    /// Plain-HTTP requests are answered with a 308 to `https://` (the host has TLS and the Ingress
    /// did not turn the redirect off).
    pub ssl_redirect: bool,
}

/// Why a route was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The same host, path and path type is already claimed by an earlier (older) source.
    #[error("{host} {path:?} is already routed by {}/{}", existing.namespace, existing.name)]
    Conflict { host: String, path: PathMatch, existing: RouteSource },
    /// The path is not absolute or cannot be routed.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
}

/// The compiled, immutable table.
#[derive(Debug, Default)]
pub struct RouteTable {
    // filled in by the routing work
}

/// Collects routes in precedence order (the first source to claim a host+path+type keeps it).
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    // filled in by the routing work
}

// === impl RouteTableBuilder === (signatures are the contract; bodies are filled in by the routing work)

impl RouteTableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for a host. Sources must be added oldest first: when the same host, path and
    /// path type is already present, the route is refused with [`RouteError::Conflict`] naming the
    /// source that keeps it.
    pub fn add(&mut self, host: HostMatch, route: Route) -> Result<(), RouteError> {
        let _ = (host, route);
        unimplemented!("routing work")
    }

    /// Sets the backend for requests no rule matches. The first call wins; later calls get
    /// [`RouteError::Conflict`].
    pub fn set_default(&mut self, route: Route) -> Result<(), RouteError> {
        let _ = route;
        unimplemented!("routing work")
    }

    pub fn build(self) -> RouteTable {
        unimplemented!("routing work")
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// The route for a request. `host` is lowercase without port (see `normalize::normalize_host`),
    /// `path` is normalized (see `normalize::normalize_path`). Falls back to the default backend.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let _ = (host, path);
        unimplemented!("routing work")
    }

    /// The default backend, if any Ingress set one.
    pub fn default_route(&self) -> Option<&Arc<Route>> {
        unimplemented!("routing work")
    }

    /// Every route with its host, in a stable order (hosts sorted, then path precedence), for
    /// `/debug/routes`. The default route is not included.
    pub fn iter(&self) -> impl Iterator<Item = (&HostMatch, &Arc<Route>)> + '_ {
        std::iter::empty()
    }

    /// Number of routes (not counting the default route).
    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
