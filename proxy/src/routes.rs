//! The route table: host → path → route, with Kubernetes Ingress v1 semantics.
//!
//! Hosts:
//! - [`HostMatch::Exact`] hosts live in a hash map, [`HostMatch::Wildcard`] `*.example.com` in a
//!   second map keyed by the parent domain (it matches exactly one extra label: `a.example.com`,
//!   not `example.com`, not `a.b.example.com`, as Ingress v1 says), the Gateway API's
//!   [`HostMatch::WildcardAnyDepth`] `*.example.com` in a third one, also keyed by the parent
//!   domain (it matches one or more extra labels: `a.example.com` and `a.b.example.com`, never
//!   `example.com`), and rules without host ([`HostMatch::Any`]) on their own.
//! - Lookup takes the most specific host that matches and considers **only its paths**: the exact
//!   host; then, walking the host's parent domains from the longest to the shortest, at the first
//!   parent (`example.com` for `a.example.com`) the one-label wildcard, then the any-depth one with
//!   the same parent, and at each further parent only any-depth wildcards (the longer the parent,
//!   the more specific, as the Gateway API's "most characters in a matching hostname" says); then
//!   `Any`. If none of the chosen host's paths matches, the answer is the default route; there is
//!   no fall-through to a less specific host.
//!
//! Paths (one trie per host):
//! - `Exact(p)` matches the request path `p` and nothing else (case-sensitive; `/foo/` does not
//!   match `/foo`).
//! - `Prefix(p)` matches element by element on `/`-separated segments: `/foo` matches `/foo`,
//!   `/foo/` and `/foo/bar`, never `/foobar`. Trailing slashes in the rule are ignored
//!   (`/foo/` is the same rule as `/foo`) and `/` matches every path.
//! - The longest matching path wins. Length is measured on the rule as it matches, i.e. without
//!   the ignored trailing slash, so on a request for `/foo`, Exact `/foo` beats Prefix `/foo/`.
//!   On equal length Exact beats Prefix.
//! - Rule paths go through [`normalize_path`] like request paths do, so `/%7Euser` and `/~user`
//!   are the same rule and the same request.
//!
//! Conditions (the Gateway API's method, header and query matches, and the listener):
//! - Several routes may claim the same host and path when their [`Route::conditions`] differ
//!   (equal conditions conflict, as equal paths always did). Within one path they are tried by
//!   [`RequestConditions::rank`], greatest first, a route without conditions last, then in the
//!   order they were added (oldest first, which is the Gateway API's tie-break).
//! - A path counts only when one of its routes accepts the request: Exact at the full path, then
//!   the regexes, then the deepest Prefix with an accepting route, a shallower one when the
//!   deeper one's routes all refuse, and the default route last.
//! - Ingress routes have no conditions: a trie slot holding one such route is the route itself,
//!   so their lookups cost what they did before conditions existed.
//!
//! Why a segment trie and not `matchit`: the design suggested a `matchit::Router` per host,
//! with a Prefix `/a/b` inserted as `/a/b`, `/a/b/` and `/a/b/{*rest}`. That gives the right
//! answers (checked against a naive reading of the spec on 400k random cases), but matchit 0.9's
//! `Router::at` keeps the wildcard nodes it skips in a `Vec` so that it can backtrack. That `Vec`
//! allocates for every request that passes a node with both a static child and a catch-all,
//! which is every host with Prefix `/` and any other path. The data path must not allocate, and
//! a trie keyed by whole segments has no need to backtrack: it walks the request's segments once
//! and remembers the deepest Prefix rule it passed. It also has no reserved characters (matchit
//! needs `{`/`}` escaped).

use std::{
    cmp::Reverse,
    collections::{btree_map, BTreeMap, HashMap, VecDeque},
    fmt,
    sync::Arc,
};

use crate::{
    backend::Backend,
    normalize::normalize_path,
    policy::{Policies, RequestConditions, RequestFacts},
};

/// Which `Host` values a set of rules applies to. Built by the controller; hosts are lowercase.
///
/// Displays as the Ingress spells it: `foo.example.com`, `*.example.com`, and `*` for `Any`. The
/// Gateway API's any-depth wildcard, written `*.example.com` in the object like the Ingress one,
/// displays as `**.example.com` so that `/debug/routes` and `gantry explain` tell the two apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// `foo.example.com`
    Exact(String),
    /// Ingress `*.example.com`, stored as the parent domain `example.com`: matches exactly one
    /// extra label (`a.example.com`, not `a.b.example.com`, not `example.com`).
    Wildcard(String),
    /// Gateway API `*.example.com` (listener `hostname`, route `hostnames`), stored as the parent
    /// domain `example.com` like [`Self::Wildcard`]: a suffix match on whole labels, so it matches
    /// one or more extra labels (`a.example.com`, `a.b.example.com`), never `example.com` itself.
    /// Displays as `**.example.com`.
    WildcardAnyDepth(String),
    /// A rule without host: applies to every host that has no match of its own.
    Any,
}

/// A path rule. Precedence (longest first, then Exact over Prefix) is derived from this.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMatch {
    Exact(String),
    /// Also used for `ImplementationSpecific`.
    Prefix(String),
    /// A regular expression, as ingress-nginx's `use-regex` makes every path of a host:
    /// case-insensitive and anchored at the start only (`/foo/.*` matches `/FOO/bar` and
    /// `/foo/x/y`). A host's regex paths are tried longest (as written) first, the first match
    /// wins; Exact paths of the host are tried before them, Prefix paths after.
    Regex(String),
    /// A Gateway API `RegularExpression` path: the whole path must match, case-sensitive (RE2
    /// syntax, as the `regex` crate reads it). Tried among the host's regex paths, in the same
    /// order (longest as written first), after Exact paths and before Prefix paths, as Envoy-based
    /// implementations do.
    FullRegex(String),
}

impl PathMatch {
    /// Whether a route table would take this path: absolute, normalizable, and for the regex
    /// kinds a pattern that compiles within the size limit. For callers that want to report a bad
    /// path before they build a route with it.
    pub fn validate(&self) -> Result<(), RouteError> {
        Claim::of(self).map(drop)
    }
}

/// Where a route came from: the Ingress (or other object) that declared it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteSource {
    pub kind: SourceKind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// The kind of object a route came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    #[default]
    Ingress,
    HttpRoute,
    GrpcRoute,
}

impl SourceKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "Ingress",
            Self::HttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
        }
    }
}

impl fmt::Display for RouteSource {
    /// `Kind namespace/name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What a matched request does. Pure data: equal routes compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub path: PathMatch,
    /// What else a request must meet to take this route (Gateway API matches); `None`: nothing.
    /// Routes on the same host and path are tried in the precedence of
    /// [`RequestConditions::rank`], then in the order they were added.
    pub conditions: Option<Arc<RequestConditions>>,
    pub backend: Arc<Backend>,
    pub source: RouteSource,
    /// What the pipeline does to a request and its response besides forwarding it. Shared: most
    /// routes of a table ask for the same (its Ingress's annotations, or none), and a route with
    /// its policies inline was about 650 bytes (`controller/examples/store_memory.rs`).
    pub policies: Arc<Policies>,
}

/// Why a route was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The same host, path and path type is already claimed by an earlier (older) source with
    /// the same conditions (routes whose conditions differ share a path).
    ///
    /// `host` is the [`HostMatch`] as displayed (`*.example.com`, `**.example.com` for the
    /// Gateway API's any-depth wildcard, `*` for rules without host,
    /// `(default)` for a second default route); `path` is the refused route's path as given.
    #[error("{host} {path:?} is already routed by {}/{}", existing.namespace, existing.name)]
    Conflict {
        host: String,
        path: PathMatch,
        existing: RouteSource,
    },
    /// The path is not absolute or cannot be routed.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
}

/// The host shown in [`RouteError::Conflict`] when a second default route is refused.
const DEFAULT_HOST: &str = "(default)";

/// The compiled, immutable table.
///
/// Two tables are equal when they hold the same routes for the same hosts and the same default
/// route (the lookup structures are derived from those). Cheap to clone (one `Arc`).
///
/// The host entries are spread over shards by name (a power of two of them, about
/// [`HOSTS_PER_SHARD`] hosts each), each behind its own `Arc`: a table made from another by
/// replacing a few hosts ([`RouteTable::patched`]) copies those hosts' shards and shares the rest,
/// so a build after a change to one Ingress of ten thousand neither copies nor frees the index of
/// every host. A lookup hashes the name once more to find the shard.
#[derive(Clone, Debug, Default)]
pub struct RouteTable(Arc<Tables>);

/// What a [`RouteTable`] holds.
#[derive(Clone, Debug, Default)]
struct Tables {
    /// Never empty once built; its length is a power of two.
    shards: Box<[Arc<Shard>]>,
    any: Option<Arc<HostTable>>,
    default: Option<Arc<Route>>,
    len: usize,
    /// Host entries in the shards.
    hosts: usize,
    /// Any-depth wildcard entries: without any, lookups never walk a host's suffixes.
    any_depth: usize,
    /// Every endpoint address of every route, sorted: what the per-worker pools may keep.
    addresses: Arc<[std::net::SocketAddr]>,
    /// Every backend of every route, sorted: whose balancer state the workers may keep.
    backend_keys: Arc<[crate::backend::BackendKey]>,
}

/// Some of a table's host entries (those whose name hashes to it).
#[derive(Clone, Debug, Default)]
struct Shard {
    exact: HashMap<Box<str>, Arc<HostTable>>,
    /// One-label wildcards, keyed by parent domain: `*.example.com` is under `example.com`.
    wildcard: HashMap<Box<str>, Arc<HostTable>>,
    /// Any-depth (Gateway API) wildcards, keyed by parent domain like `wildcard`.
    any_depth: HashMap<Box<str>, Arc<HostTable>>,
    /// Its hosts in `HostMatch` order.
    listing: Vec<HostRoutes>,
    /// Every endpoint address and backend of its hosts, sorted and without repeats.
    addresses: Box<[std::net::SocketAddr]>,
    backend_keys: Box<[crate::backend::BackendKey]>,
}

/// About how many hosts a shard of a [`RouteTable`] holds.
const HOSTS_PER_SHARD: usize = 64;

/// The shard of a host entry's name among `shards` (a power of two). A fixed hash, so that two
/// tables with as many shards put every host in the same one (equality compares shard by shard).
/// Host names come from requests, but they only choose a shard: the maps inside are keyed with
/// the standard library's random hashing.
#[inline]
fn shard_of(name: &str, shards: usize) -> usize {
    use std::hash::BuildHasher;
    (foldhash::fast::FixedState::with_seed(0x6761_6e74_7279).hash_one(name) as usize) & (shards - 1)
}

/// The name a host entry is filed under (`None` for `Any`, which has no shard).
fn entry_name(host: &HostMatch) -> Option<&str> {
    match host {
        HostMatch::Exact(h) | HostMatch::Wildcard(h) | HostMatch::WildcardAnyDepth(h) => Some(h),
        HostMatch::Any => None,
    }
}

impl PartialEq for RouteTable {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        if Arc::ptr_eq(a, b) {
            return true;
        }
        if a.len != b.len || a.hosts != b.hosts || a.default != b.default || a.any != b.any {
            return false;
        }
        if a.shards.len() == b.shards.len() {
            return a
                .shards
                .iter()
                .zip(b.shards.iter())
                .all(|(x, y)| Arc::ptr_eq(x, y) || x.listing == y.listing);
        }
        self.listing() == other.listing()
    }
}

impl Eq for RouteTable {}

/// One host of [`RouteTable::iter`]: the host and its table.
type HostRoutes = (HostMatch, Arc<HostTable>);

/// The compiled routes of one host entry: its path trie and its routes in precedence order.
///
/// Shared between snapshots: a build that finds a host's routes unchanged passes the last
/// table's `Arc` on ([`RouteTableBuilder::add_host_table`]) instead of compiling them again, so
/// a change to one Ingress compiles the hosts of that Ingress only. Two tables are equal when
/// their routes are (the trie is derived from them).
#[derive(Debug)]
pub struct HostTable {
    trie: PathTrie,
    routes: Box<[Arc<Route>]>,
    /// Every endpoint address and every backend of its routes, sorted and without repeats:
    /// worked out once when the host is compiled, so that a table assembled from hosts kept
    /// across builds merges these instead of walking every route again.
    addresses: Box<[std::net::SocketAddr]>,
    backend_keys: Box<[crate::backend::BackendKey]>,
}

impl PartialEq for HostTable {
    fn eq(&self, other: &Self) -> bool {
        self.routes == other.routes
    }
}

impl Eq for HostTable {}

impl HostTable {
    fn new(claims: BTreeMap<Claim, Claimants>) -> Self {
        let trie = PathTrie::new(&claims);
        // `claims` is a BTreeMap over `Claim`, so its values are already in precedence order.
        let routes: Box<[Arc<Route>]> = claims.into_values().flatten().collect();
        let (addresses, backend_keys) = used_by(routes.iter());
        Self {
            trie,
            routes,
            addresses,
            backend_keys,
        }
    }

    /// The host's routes in precedence order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The claims the table was compiled from, for adding more routes to its host.
    fn claims(&self) -> BTreeMap<Claim, Claimants> {
        let mut claims: BTreeMap<Claim, Claimants> = BTreeMap::new();
        for route in self.routes.iter() {
            // Every route of a table was accepted by `Claim::of` once.
            if let Ok(claim) = Claim::of(&route.path) {
                claims.entry(claim).or_default().push(route.clone());
            }
        }
        claims
    }
}

/// Every endpoint address and every backend key the routes may send to, each sorted and without
/// repeats.
fn used_by<'r>(
    routes: impl Iterator<Item = &'r Arc<Route>>,
) -> (Box<[std::net::SocketAddr]>, Box<[crate::backend::BackendKey]>) {
    let (mut addresses, mut keys) = (Vec::new(), Vec::new());
    for backend in routes.flat_map(|r| r.backends()) {
        addresses.extend(backend.endpoints.iter().map(|e| e.addr));
        keys.push(backend.key());
    }
    addresses.sort_unstable();
    addresses.dedup();
    keys.sort_unstable();
    keys.dedup();
    (addresses.into(), keys.into())
}

/// A host table's addresses and backend keys; none for no table.
fn used_of(table: &Option<Arc<HostTable>>) -> (&[std::net::SocketAddr], &[crate::backend::BackendKey]) {
    table
        .as_ref()
        .map(|t| (&t.addresses[..], &t.backend_keys[..]))
        .unwrap_or_default()
}

/// `set` (sorted, without repeats) with `added` in and `gone` out; the same `Arc` when neither
/// changes it.
fn patched_set<T: Ord + Copy>(set: &Arc<[T]>, mut added: Vec<T>, gone: &[T]) -> Arc<[T]> {
    added.retain(|x| set.binary_search(x).is_err());
    if added.is_empty() && gone.is_empty() {
        return set.clone();
    }
    let mut all: Vec<T> = set.iter().copied().filter(|x| !gone.contains(x)).collect();
    all.extend(added);
    all.sort_unstable();
    all.dedup();
    all.into()
}

/// Sorts and deduplicates what the pieces hold, each sorted already.
fn merged<T: Ord + Copy>(pieces: impl Iterator<Item = impl AsRef<[T]>>) -> Box<[T]> {
    let mut all = Vec::new();
    for piece in pieces {
        all.extend_from_slice(piece.as_ref());
    }
    all.sort_unstable();
    all.dedup();
    all.into()
}

/// The routes of one claim, in the order they are tried: by [`RequestConditions::rank`],
/// greatest first (no conditions last), then in the order they were added.
type Claimants = Vec<Arc<Route>>;

/// Collects routes in precedence order (the first source to claim a host+path+type with given
/// conditions keeps it).
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    // foldhash: these maps live only while a table is built, from hosts the cluster's objects
    // name (not from requests), and a build fills one entry per host.
    hosts: HashMap<HostMatch, BTreeMap<Claim, Claimants>, foldhash::fast::RandomState>,
    /// Hosts whose compiled table was handed in whole ([`Self::add_host_table`]).
    built: HashMap<HostMatch, Arc<HostTable>, foldhash::fast::RandomState>,
    default: Option<Arc<Route>>,
}

/// What a path rule claims, in canonical form. It is the key for conflicts (together with the
/// route's conditions) and, because it derives `Ord` in this field order, also the precedence:
/// the longest path first, then Exact before Prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    len: Reverse<usize>,
    kind: Kind,
    /// The normalized path; for Prefix without trailing slashes (`""` for Prefix `/`).
    path: Box<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Exact,
    Prefix,
    /// Before `Regex`, so that of two regexes of one length the stricter (whole path) is tried
    /// first.
    FullRegex,
    Regex,
}

/// The paths of one host: a trie over `/`-separated segments.
///
/// The root stands for "no segment yet"; `/` is the root's child with the empty segment, `/a/` is
/// `a` then the empty segment. An Exact rule sits on the node of its full path; a Prefix rule on
/// the node of its path without trailing slashes (Prefix `/` on the root).
///
/// The trie is flat: three arrays per host instead of one allocation per node and segment, so
/// a lookup in a table much larger than the CPU cache touches a few cache lines, not a few per
/// level.
#[derive(Debug)]
struct PathTrie {
    /// `nodes[0]` is the root; nodes are in breadth-first order.
    nodes: Box<[Node]>,
    /// The children of a node are `edges[node.edges]`, sorted by label for binary search.
    edges: Box<[Edge]>,
    /// The text of every edge label, one after the other. Normalized paths are ASCII, but
    /// labels are compared as bytes anyway.
    labels: Box<[u8]>,
    /// Regex paths in the order they are tried (longest as written first), each with its routes
    /// in the order they are tried. Empty for hosts without `use-regex`, which then pay nothing
    /// for them.
    regexes: Box<[(regex::Regex, RouteList)]>,
    /// The routes of the slots that hold routes with conditions (or more than one route), in the
    /// order they are tried. Empty for hosts of Ingress routes only.
    lists: Box<[RouteList]>,
}

/// Routes in the order they are tried.
type RouteList = Box<[Arc<Route>]>;

/// The `*_list` of a node slot without a list.
const NO_LIST: u32 = u32::MAX;
/// The `*_list` of a node slot whose one route has conditions: the route is in the slot, and its
/// conditions are judged there (no list to fetch). A Gateway API route without matches besides
/// its path still has one, the listener's (`tls`), so this is the common Gateway API case.
const CHECK: u32 = u32::MAX - 1;

/// One trie node, 32 bytes: two to a cache line.
///
/// Each of its Exact and Prefix slots is, in the common case of one route without conditions
/// (every Ingress route), the route itself, so that looking it up reads nothing but the node.
/// One route with conditions is in the slot too, marked [`CHECK`]; otherwise the slot's route is
/// `None` and its routes are a list in [`PathTrie::lists`].
#[derive(Debug)]
struct Node {
    /// `start..end` into `PathTrie::edges`.
    edges: (u32, u32),
    exact: Option<Arc<Route>>,
    prefix: Option<Arc<Route>>,
    /// Index into `PathTrie::lists`, or [`NO_LIST`], or [`CHECK`].
    exact_list: u32,
    prefix_list: u32,
}

#[derive(Debug)]
struct Edge {
    /// `start..end` into `PathTrie::labels`.
    label: (u32, u32),
    /// Index into `PathTrie::nodes`.
    node: u32,
}

/// A [`Node`] while the table is being built.
#[derive(Default)]
struct NodeBuilder<'a> {
    children: BTreeMap<&'a str, NodeBuilder<'a>>,
    exact: &'a [Arc<Route>],
    prefix: &'a [Arc<Route>],
}

// === impl HostMatch ===

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Wildcard(parent) => write!(f, "*.{parent}"),
            Self::WildcardAnyDepth(parent) => write!(f, "**.{parent}"),
            Self::Any => f.write_str("*"),
        }
    }
}

impl HostMatch {
    /// Lowercase, without a trailing dot; a wildcard given as `*.example.com` (or an any-depth
    /// one as `**.example.com`, as it displays) is taken as `example.com`. Lookups compare
    /// against hosts normalized the same way.
    fn canonical(self) -> Self {
        fn clean(mut host: String) -> String {
            host.make_ascii_lowercase();
            if host.ends_with('.') {
                host.pop();
            }
            host
        }
        fn parent(parent: String, prefixes: &[&str]) -> String {
            let parent = match prefixes.iter().find_map(|p| parent.strip_prefix(p)) {
                Some(stripped) => stripped.to_owned(),
                None => parent,
            };
            clean(parent)
        }
        match self {
            Self::Exact(host) => Self::Exact(clean(host)),
            Self::Wildcard(p) => Self::Wildcard(parent(p, &["*."])),
            Self::WildcardAnyDepth(p) => Self::WildcardAnyDepth(parent(p, &["**.", "*."])),
            Self::Any => Self::Any,
        }
    }
}

// === impl Claim ===

impl Claim {
    fn of(path: &PathMatch) -> Result<Self, RouteError> {
        let (kind, raw) = match path {
            PathMatch::Exact(p) => (Kind::Exact, p),
            PathMatch::Prefix(p) => (Kind::Prefix, p),
            PathMatch::Regex(p) | PathMatch::FullRegex(p) => {
                let kind = match path {
                    PathMatch::Regex(_) => Kind::Regex,
                    _ => Kind::FullRegex,
                };
                // Validated here so that a bad regex is the caller's error; compiled again when
                // the table is built.
                compile_regex(p, kind)?;
                return Ok(Self {
                    len: Reverse(p.len()),
                    kind,
                    path: p.as_str().into(),
                });
            }
        };
        let normal = normalize_path(raw).map_err(|e| RouteError::InvalidPath {
            path: raw.clone(),
            reason: e.reason(),
        })?;
        let path: Box<str> = match kind {
            Kind::Prefix => normal.trim_end_matches('/').into(),
            Kind::Exact | Kind::Regex | Kind::FullRegex => normal.into(),
        };
        Ok(Self {
            len: Reverse(path.len()),
            kind,
            path,
        })
    }

    /// The segments leading to this claim's trie node.
    fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        // Prefix `/` is stored as "" and sits on the root: no segments at all.
        let rest = self.path.strip_prefix('/');
        rest.into_iter().flat_map(|rest| rest.split('/'))
    }
}

// === impl RouteTableBuilder ===

impl RouteTableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `hosts` hosts handed in compiled ([`Self::add_host_table`]), so that a build
    /// of many does not grow its map again and again.
    pub fn reserve_hosts(&mut self, hosts: usize) {
        self.built.reserve(hosts);
    }

    /// Adds a route for a host. Sources must be added oldest first: when the same host, path and
    /// path type is already present with the same [`Route::conditions`] (equal method, header and
    /// query conditions on an overlapping listener: no listener condition overlaps both), the
    /// route is refused with [`RouteError::Conflict`] naming the source that keeps it. Routes whose conditions differ
    /// share the path: they are tried by [`RequestConditions::rank`] (greatest first, a route
    /// without conditions last), then in the order they were added.
    ///
    /// Hosts are lowercased and lose a trailing dot. Paths are compared after [`normalize_path`],
    /// and Prefix paths also without trailing slashes, so Prefix `/foo` and `/foo/` are the same
    /// claim; Exact and Prefix on the same path are two claims. A path that `normalize_path`
    /// refuses (not starting with `/`, escaping the root, bad percent-encoding, ...) is refused
    /// with [`RouteError::InvalidPath`].
    pub fn add(&mut self, host: HostMatch, route: Route) -> Result<(), RouteError> {
        let host = host.canonical();
        let claim = Claim::of(&route.path)?;
        if let Some(claims) = self.hosts.get_mut(&host) {
            return Self::claim(claims, &host, claim, route);
        }
        let claims = match self.built.remove(&host) {
            // More routes for a host handed in compiled: its claims take the new one as if they
            // had been added one by one.
            Some(table) => self.hosts.entry(host.clone()).or_insert(table.claims()),
            None => self.hosts.entry(host.clone()).or_default(),
        };
        Self::claim(claims, &host, claim, route)
    }

    /// Adds a host's routes compiled before, by [`Self::host_table`] (of this or an earlier
    /// build). A host that already has routes here keeps them, and the table's routes are added
    /// after them as [`Self::add`] would.
    pub fn add_host_table(&mut self, host: HostMatch, table: Arc<HostTable>) {
        let host = host.canonical();
        if !self.hosts.contains_key(&host) && !self.built.contains_key(&host) {
            self.built.insert(host, table);
            return;
        }
        // The host has routes already: the table's are added after them, one by one.
        for route in table.routes.iter() {
            let _ = self.add(host.clone(), Route::clone(route));
        }
    }

    /// Takes one host's routes out of the builder, compiled, for [`Self::add_host_table`]; `None`
    /// when the host has no entry.
    pub fn host_table(&mut self, host: &HostMatch) -> Option<Arc<HostTable>> {
        let host = host.clone().canonical();
        if let Some(table) = self.built.remove(&host) {
            return Some(table);
        }
        self.hosts
            .remove(&host)
            .map(|claims| Arc::new(HostTable::new(claims)))
    }

    /// A host entry, with no routes unless some are added: requests for its hosts get the default
    /// (or 404) rather than the routes of a less specific entry. For the Gateway API's listener
    /// isolation: the hosts of a listener's hostname belong to that listener alone.
    pub fn reserve_host(&mut self, host: HostMatch) {
        let host = host.canonical();
        if !self.built.contains_key(&host) {
            self.hosts.entry(host).or_default();
        }
    }

    fn claim(
        claims: &mut BTreeMap<Claim, Claimants>,
        host: &HostMatch,
        claim: Claim,
        route: Route,
    ) -> Result<(), RouteError> {
        match claims.entry(claim) {
            btree_map::Entry::Vacant(entry) => {
                entry.insert(vec![Arc::new(route)]);
                Ok(())
            }
            btree_map::Entry::Occupied(mut entry) => {
                let routes = entry.get_mut();
                if let Some(existing) = routes
                    .iter()
                    .find(|r| same_claim(&r.conditions, &route.conditions))
                {
                    return Err(RouteError::Conflict {
                        host: host.to_string(),
                        path: route.path,
                        existing: existing.source.clone(),
                    });
                }
                // After every route of greater or equal rank: equal ranks keep the order added.
                let rank = route.rank();
                let at = routes.partition_point(|r| r.rank() >= rank);
                routes.insert(at, Arc::new(route));
                Ok(())
            }
        }
    }

    /// Sets the backend for requests no rule matches. The first call wins; later calls get
    /// [`RouteError::Conflict`] with the host `(default)`.
    pub fn set_default(&mut self, route: Route) -> Result<(), RouteError> {
        if let Some(existing) = &self.default {
            return Err(RouteError::Conflict {
                host: DEFAULT_HOST.to_owned(),
                path: route.path,
                existing: existing.source.clone(),
            });
        }
        self.default = Some(Arc::new(route));
        Ok(())
    }

    pub fn build(self) -> RouteTable {
        let compiled = self
            .hosts
            .into_iter()
            .map(|(host, claims)| (host, Arc::new(HostTable::new(claims))));
        let entries: Vec<HostRoutes> = compiled.chain(self.built).collect();
        let shards = (entries.len() / HOSTS_PER_SHARD).next_power_of_two();
        let mut table = Tables {
            default: self.default,
            ..Tables::default()
        };
        let mut filled: Vec<Shard> = vec![Shard::default(); shards];
        for (host, trie) in entries {
            table.len += trie.routes.len();
            match entry_name(&host) {
                None => table.any = Some(trie),
                Some(name) => {
                    table.hosts += 1;
                    table.any_depth += usize::from(matches!(host, HostMatch::WildcardAnyDepth(_)));
                    filled[shard_of(name, shards)].listing.push((host, trie));
                }
            }
        }
        table.shards = filled
            .into_iter()
            .map(|mut shard| {
                shard.listing.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
                for (host, trie) in shard.listing.clone() {
                    shard.file(host, trie);
                }
                shard.merge_used();
                Arc::new(shard)
            })
            .collect();
        table.merge_used();
        RouteTable(Arc::new(table))
    }
}

// === impl Shard ===

impl Shard {
    /// Files a host's table where lookups find it (replacing the host's last one); not in
    /// `listing`.
    fn file(&mut self, host: HostMatch, table: Arc<HostTable>) {
        match host {
            HostMatch::Exact(host) => {
                self.exact.insert(host.into(), table);
            }
            HostMatch::Wildcard(parent) => {
                self.wildcard.insert(parent.into(), table);
            }
            HostMatch::WildcardAnyDepth(parent) => {
                self.any_depth.insert(parent.into(), table);
            }
            HostMatch::Any => {}
        }
    }

    fn unfile(&mut self, host: &HostMatch) {
        match host {
            HostMatch::Exact(host) => {
                self.exact.remove(host.as_str());
            }
            HostMatch::Wildcard(parent) => {
                self.wildcard.remove(parent.as_str());
            }
            HostMatch::WildcardAnyDepth(parent) => {
                self.any_depth.remove(parent.as_str());
            }
            HostMatch::Any => {}
        }
    }

    fn merge_used(&mut self) {
        self.addresses = merged(self.listing.iter().map(|(_, t)| &t.addresses[..]));
        self.backend_keys = merged(self.listing.iter().map(|(_, t)| &t.backend_keys[..]));
    }
}

// === impl Tables ===

impl Tables {
    /// `addresses` and `backend_keys` from every shard's, `Any`'s and the default route's.
    fn merge_used(&mut self) {
        let (default_addresses, default_keys) = used_by(self.default.iter());
        let any = self.any.iter();
        self.addresses = merged(
            self.shards
                .iter()
                .map(|s| &s.addresses[..])
                .chain(any.clone().map(|t| &t.addresses[..]))
                .chain([&default_addresses[..]]),
        )
        .into();
        self.backend_keys = merged(
            self.shards
                .iter()
                .map(|s| &s.backend_keys[..])
                .chain(any.map(|t| &t.backend_keys[..]))
                .chain([&default_keys[..]]),
        )
        .into();
    }

    fn shard(&self, name: &str) -> &Shard {
        &self.shards[shard_of(name, self.shards.len())]
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// The route for a request. `host` is lowercase without port (see `normalize::normalize_host`),
    /// `path` is normalized (see `normalize::normalize_path`); `facts` are what
    /// [`Route::conditions`] are judged on. Falls back to the default backend.
    ///
    /// A path rule counts only when one of its routes accepts the request: Exact at the full
    /// path, then the regexes, then the deepest Prefix with an accepting route (a shorter one
    /// when the longer one's routes all refuse the request).
    ///
    /// Does not allocate or lock. A path that does not start with `/` matches no rule.
    #[inline]
    pub fn lookup_request(&self, host: &str, path: &str, facts: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        self.paths_for(host)
            .and_then(|paths| paths.lookup(path, facts))
            .or(self.0.default.as_ref())
    }

    /// [`Self::lookup_request`] for a plain-HTTP `GET` without headers or query: the answer for
    /// routes without conditions (every Ingress route), for tests and tools.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let headers = http::HeaderMap::new();
        let facts = RequestFacts::get(&headers);
        self.lookup_request(host, path, &facts)
    }

    /// The paths of the most specific host entry that matches `host`: exact, then the one-label
    /// wildcard of the first parent, then the any-depth wildcards from the longest parent to the
    /// shortest, then `Any`. Without any-depth wildcards this is what it was before they existed
    /// (one more emptiness check on a wildcard miss); with them it walks the suffixes in place,
    /// without allocating.
    #[inline]
    fn paths_for(&self, host: &str) -> Option<&PathTrie> {
        if self.0.hosts == 0 {
            return self.0.any.as_deref().map(|t| &t.trie);
        }
        if let Some(paths) = self.0.shard(host).exact.get(host) {
            return Some(&paths.trie);
        }
        if let Some((label, parent)) = host.split_once('.') {
            if !label.is_empty() {
                if let Some(paths) = self.0.shard(parent).wildcard.get(parent) {
                    return Some(&paths.trie);
                }
                if self.0.any_depth > 0 {
                    if let Some((_, paths)) = self.any_depth_entries(parent).next() {
                        return Some(paths);
                    }
                }
            }
        }
        self.0.any.as_deref().map(|t| &t.trie)
    }

    /// The any-depth wildcard entries matching a host whose first parent domain is `parent`
    /// (`b.example.com` for `a.b.example.com`), from the longest parent to the shortest, each
    /// with the parent it is keyed by. A suffix is only tried at a label boundary, and a host
    /// with an empty label matches none beyond it.
    #[inline]
    fn any_depth_entries<'t, 'h>(
        &'t self,
        parent: &'h str,
    ) -> impl Iterator<Item = (&'h str, &'t PathTrie)> + use<'t, 'h> {
        let suffixes = std::iter::successors(Some(parent), |p| {
            p.split_once('.')
                .filter(|(label, _)| !label.is_empty())
                .map(|(_, rest)| rest)
        });
        suffixes
            .take_while(|p| !p.is_empty())
            .filter_map(|p| self.0.shard(p).any_depth.get(p).map(|paths| (p, &paths.trie)))
    }

    /// Why a request goes where it goes: the host entry that applies, the route chosen, and for
    /// every other rule of that host (and every less specific host entry that also matches) why
    /// it was not chosen. For `/debug/explain` and `gantry explain`; not on the request path.
    pub fn explain(&self, host: &str, path: &str, facts: &RequestFacts<'_>) -> Explanation {
        let chosen = self.lookup_request(host, path, facts).cloned();
        let by_default =
            chosen.is_some() && self.paths_for(host).and_then(|p| p.lookup(path, facts)).is_none();
        let mut applicable: Vec<HostMatch> = Vec::new();
        let filed = self.0.hosts > 0;
        if filed && self.0.shard(host).exact.contains_key(host) {
            applicable.push(HostMatch::Exact(host.to_owned()));
        }
        if let Some((label, parent)) = host.split_once('.').filter(|_| filed) {
            if !label.is_empty() {
                if self.0.shard(parent).wildcard.contains_key(parent) {
                    applicable.push(HostMatch::Wildcard(parent.to_owned()));
                }
                for (parent, _) in self.any_depth_entries(parent) {
                    applicable.push(HostMatch::WildcardAnyDepth(parent.to_owned()));
                }
            }
        }
        if self.0.any.is_some() {
            applicable.push(HostMatch::Any);
        }
        let host_entry = applicable.first().cloned();
        let mut not_chosen = Vec::new();
        for (i, entry) in applicable.iter().enumerate() {
            let Some(table) = self.host_table(entry) else {
                continue;
            };
            for route in table.routes.iter() {
                if chosen.as_ref().is_some_and(|c| Arc::ptr_eq(c, route)) {
                    continue;
                }
                let why = if i > 0 {
                    format!(
                        "host {entry} is less specific than {}; only the most specific host's rules apply",
                        applicable[0]
                    )
                } else if !path_matches(&route.path, path) {
                    path_mismatch(&route.path).to_owned()
                } else if let Some(c) = route.conditions.as_ref().filter(|c| !c.accepts(facts)) {
                    format!(
                        "the path matches, but the request does not meet: {}",
                        c.describe()
                    )
                } else {
                    "matches, but a rule tried earlier matched first (longer path, Exact before regex before Prefix, then conditions by precedence)".to_owned()
                };
                not_chosen.push(NotChosen {
                    host: entry.clone(),
                    route: route.clone(),
                    why,
                });
            }
        }
        Explanation {
            host_entry,
            chosen,
            by_default,
            not_chosen,
        }
    }

    /// This table with some hosts' compiled tables replaced (`Some`) or removed (`None`), the
    /// default route kept: what [`RouteTableBuilder::build`] makes of the same hosts (with the
    /// same lookups; the shards stay as many as they were), for a build that changed a few hosts
    /// of many and kept the rest. Copies the shards of the hosts that change and shares every
    /// other; the lists of addresses and backends are patched with what the changed hosts had
    /// and have (an address a removed host had stays while another shard's host has it).
    pub fn patched(
        &self,
        changes: impl IntoIterator<Item = (HostMatch, Option<Arc<HostTable>>)>,
    ) -> RouteTable {
        let mut t = Tables::clone(&self.0);
        if t.shards.is_empty() {
            t.shards = vec![Arc::new(Shard::default())].into();
        }
        let (mut gone_addresses, mut gone_keys) = (Vec::new(), Vec::new());
        let (mut new_addresses, mut new_keys) = (Vec::new(), Vec::new());
        for (host, table) in changes {
            let host = host.canonical();
            let old = match entry_name(&host) {
                None => std::mem::replace(&mut t.any, table.clone()),
                Some(name) => {
                    let n = t.shards.len();
                    let shard = Arc::make_mut(&mut t.shards[shard_of(name, n)]);
                    let at = shard.listing.binary_search_by(|(h, _)| h.cmp(&host));
                    let old = at.ok().map(|i| shard.listing[i].1.clone());
                    if let (Some(a), Some(b)) = (&old, &table) {
                        if Arc::ptr_eq(a, b) {
                            continue;
                        }
                    }
                    let any_depth = usize::from(matches!(host, HostMatch::WildcardAnyDepth(_)));
                    match (at, &table) {
                        (Ok(i), Some(table)) => {
                            shard.listing[i].1 = table.clone();
                            shard.file(host, table.clone());
                        }
                        (Ok(i), None) => {
                            shard.listing.remove(i);
                            shard.unfile(&host);
                            t.hosts -= 1;
                            t.any_depth -= any_depth;
                        }
                        (Err(i), Some(table)) => {
                            shard.listing.insert(i, (host.clone(), table.clone()));
                            shard.file(host, table.clone());
                            t.hosts += 1;
                            t.any_depth += any_depth;
                        }
                        (Err(_), None) => {}
                    }
                    shard.merge_used();
                    old
                }
            };
            t.len -= old.as_ref().map_or(0, |old| old.routes.len());
            t.len += table.as_ref().map_or(0, |table| table.routes.len());
            let (old_used, new_used) = (used_of(&old), used_of(&table));
            if old_used != new_used {
                gone_addresses.extend(old_used.0.iter().filter(|a| new_used.0.binary_search(a).is_err()));
                gone_keys.extend(old_used.1.iter().filter(|k| new_used.1.binary_search(k).is_err()));
                new_addresses.extend_from_slice(new_used.0);
                new_keys.extend_from_slice(new_used.1);
            }
        }
        let default = used_by(t.default.iter());
        let any = used_of(&t.any);
        // Whether any host (or the default route) still uses an address or backend: one binary
        // search per shard, for the few that a changed host no longer has.
        let still_addr = |a: &std::net::SocketAddr| {
            t.shards.iter().any(|s| s.addresses.binary_search(a).is_ok())
                || any.0.binary_search(a).is_ok()
                || default.0.binary_search(a).is_ok()
        };
        let still_key = |k: &crate::backend::BackendKey| {
            t.shards.iter().any(|s| s.backend_keys.binary_search(k).is_ok())
                || any.1.binary_search(k).is_ok()
                || default.1.binary_search(k).is_ok()
        };
        gone_addresses.retain(|a| !still_addr(a));
        gone_keys.retain(|k| !still_key(k));
        t.addresses = patched_set(&t.addresses, new_addresses, &gone_addresses);
        t.backend_keys = patched_set(&t.backend_keys, new_keys, &gone_keys);
        RouteTable(Arc::new(t))
    }

    /// The host tables this table has and `before` has not, and those `before` has and this has
    /// not, host by host (a host whose table is the same `Arc` in both is in neither): what a
    /// publish counts in and out. Shards the two share are not looked into.
    pub fn changed_host_tables<'a>(&'a self, before: &'a RouteTable) -> HostTableChanges<'a> {
        let mut changes = HostTableChanges::default();
        if Arc::ptr_eq(&self.0, &before.0) {
            return changes;
        }
        let (now, then) = (&self.0, &before.0);
        if now.shards.len() == then.shards.len() {
            for (a, b) in now.shards.iter().zip(then.shards.iter()) {
                if !Arc::ptr_eq(a, b) {
                    changes.diff(
                        a.listing.iter().map(|(h, t)| (h, t)),
                        b.listing.iter().map(|(h, t)| (h, t)),
                    );
                }
            }
        } else {
            let (mut a, mut b) = (self.listing(), before.listing());
            a.retain(|(h, _)| **h != HostMatch::Any);
            b.retain(|(h, _)| **h != HostMatch::Any);
            changes.diff(a.into_iter(), b.into_iter());
        }
        match (&now.any, &then.any) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            (a, b) => {
                changes.added.extend(a.iter());
                changes.removed.extend(b.iter());
            }
        }
        changes
    }

    /// The compiled table of one host entry.
    pub fn host_table(&self, host: &HostMatch) -> Option<&Arc<HostTable>> {
        let name = match entry_name(host) {
            None => return self.0.any.as_ref(),
            Some(name) => name,
        };
        if self.0.shards.is_empty() {
            return None;
        }
        let shard = self.0.shard(name);
        let at = shard.listing.binary_search_by(|(h, _)| h.cmp(host)).ok()?;
        Some(&shard.listing[at].1)
    }

    /// Every host's compiled table (shared between snapshots; see [`HostTable`]), in no
    /// particular order.
    pub fn host_tables(&self) -> impl Iterator<Item = &Arc<HostTable>> + '_ {
        self.entries().map(|(_, t)| t)
    }

    /// Every host entry with its table, in no particular order.
    fn entries(&self) -> impl Iterator<Item = (&HostMatch, &Arc<HostTable>)> + '_ {
        static ANY: HostMatch = HostMatch::Any;
        self.0
            .shards
            .iter()
            .flat_map(|s| s.listing.iter().map(|(h, t)| (h, t)))
            .chain(self.0.any.iter().map(|t| (&ANY, t)))
    }

    /// Every host entry with its table, in host order.
    fn listing(&self) -> Vec<(&HostMatch, &Arc<HostTable>)> {
        let mut all: Vec<_> = self.entries().collect();
        all.sort_unstable_by_key(|(h, _)| *h);
        all
    }

    /// The default backend, if any Ingress set one.
    pub fn default_route(&self) -> Option<&Arc<Route>> {
        self.0.default.as_ref()
    }

    /// Every route with its host, in a stable order (hosts sorted, then path precedence), for
    /// `/debug/routes`. The default route is not included.
    ///
    /// Hosts sort as [`HostMatch`] derives it: exact hosts, then one-label wildcards, then
    /// any-depth wildcards, then `Any`, each alphabetically. Paths sort longest first (without a
    /// Prefix's trailing slash), then Exact before Prefix, then alphabetically.
    pub fn iter(&self) -> impl Iterator<Item = (&HostMatch, &Arc<Route>)> + '_ {
        self.listing()
            .into_iter()
            .flat_map(|(host, table)| table.routes.iter().map(move |route| (host, route)))
    }

    /// [`Self::iter`] in no particular order, without sorting the hosts first.
    pub fn iter_unordered(&self) -> impl Iterator<Item = (&HostMatch, &Arc<Route>)> + '_ {
        self.entries()
            .flat_map(|(host, table)| table.routes.iter().map(move |route| (host, route)))
    }

    /// Number of routes (not counting the default route).
    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every endpoint address the table forwards to, sorted and without duplicates.
    pub fn addresses(&self) -> &[std::net::SocketAddr] {
        &self.0.addresses
    }

    /// Every backend's key, sorted and without duplicates.
    pub fn backend_keys(&self) -> &[crate::backend::BackendKey] {
        &self.0.backend_keys
    }

    /// Number of distinct host entries (exact hosts, wildcards of both kinds, and `Any` if
    /// present).
    pub fn host_count(&self) -> usize {
        self.0.hosts + usize::from(self.0.any.is_some())
    }
}

/// What [`RouteTable::changed_host_tables`] found.
#[derive(Debug, Default)]
pub struct HostTableChanges<'a> {
    pub added: Vec<&'a Arc<HostTable>>,
    pub removed: Vec<&'a Arc<HostTable>>,
}

impl<'a> HostTableChanges<'a> {
    /// Two host listings, each in host order, compared host by host.
    fn diff(
        &mut self,
        now: impl Iterator<Item = (&'a HostMatch, &'a Arc<HostTable>)>,
        then: impl Iterator<Item = (&'a HostMatch, &'a Arc<HostTable>)>,
    ) {
        let (mut now, mut then) = (now.peekable(), then.peekable());
        loop {
            match (now.peek(), then.peek()) {
                (None, None) => return,
                (Some(_), None) => self.added.extend(now.by_ref().map(|(_, t)| t)),
                (None, Some(_)) => self.removed.extend(then.by_ref().map(|(_, t)| t)),
                (Some((h, a)), Some((g, b))) => match h.cmp(g) {
                    std::cmp::Ordering::Less => {
                        self.added.push(a);
                        now.next();
                    }
                    std::cmp::Ordering::Greater => {
                        self.removed.push(b);
                        then.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(a, b) {
                            self.added.push(a);
                            self.removed.push(b);
                        }
                        now.next();
                        then.next();
                    }
                },
            }
        }
    }
}

/// What [`RouteTable::explain`] found.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The host entry whose rules apply (`None`: no host entry matches).
    pub host_entry: Option<HostMatch>,
    /// The route the request goes to, if any.
    pub chosen: Option<Arc<Route>>,
    /// True when `chosen` is the default backend because no rule of the host matched.
    pub by_default: bool,
    /// Every other rule that was considered, with the reason it lost.
    pub not_chosen: Vec<NotChosen>,
}

/// A rule [`RouteTable::explain`] did not choose.
#[derive(Clone, Debug)]
pub struct NotChosen {
    pub host: HostMatch,
    pub route: Arc<Route>,
    pub why: String,
}

/// Whether two routes on the same host and path claim the same requests: the same method, header
/// and query conditions, on listeners that overlap (no listener condition overlaps both). Equal
/// conditions always do; so does an Ingress route (no conditions) and an HTTPRoute match without
/// method, headers or query on the plain-HTTP listener, which must conflict so that the older
/// claim keeps its requests rather than the newer one taking the plain-HTTP half of them.
fn same_claim(a: &Option<Arc<RequestConditions>>, b: &Option<Arc<RequestConditions>>) -> bool {
    let none = RequestConditions::default();
    let (a, b) = (a.as_deref().unwrap_or(&none), b.as_deref().unwrap_or(&none));
    let listeners_overlap = match (a.tls, b.tls) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    a.method == b.method && a.headers == b.headers && a.query == b.query && listeners_overlap
}

/// The first of `routes` that accepts the request.
#[inline]
fn accepting<'r>(routes: &'r [Arc<Route>], facts: &RequestFacts<'_>) -> Option<&'r Arc<Route>> {
    routes.iter().find(|r| r.accepts(facts))
}

// === impl Route ===

impl Route {
    /// Whether the request meets the route's conditions (a route without any takes every request
    /// of its host and path).
    #[inline]
    pub fn accepts(&self, facts: &RequestFacts<'_>) -> bool {
        self.conditions.as_ref().is_none_or(|c| c.accepts(facts))
    }

    /// Every backend the route may send to: its own, then its policies' others (canary, default
    /// backend, weighted split, mirrors).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<crate::backend::Backend>> {
        std::iter::once(&self.backend).chain(self.policies.other_backends())
    }

    /// The route's precedence among the routes of its host and path: no conditions rank lowest.
    fn rank(&self) -> Option<(bool, usize, usize)> {
        self.conditions.as_ref().map(|c| c.rank())
    }
}

/// Whether one rule matches `path` on its own (precedence aside).
fn path_matches(rule: &PathMatch, path: &str) -> bool {
    match rule {
        PathMatch::Exact(p) => normalize_path(p).is_ok_and(|p| p == path),
        PathMatch::Prefix(p) => normalize_path(p).is_ok_and(|p| {
            let p = p.trim_end_matches('/');
            path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        }),
        PathMatch::Regex(p) => compile_regex(p, Kind::Regex).is_ok_and(|re| re.is_match(path)),
        PathMatch::FullRegex(p) => compile_regex(p, Kind::FullRegex).is_ok_and(|re| re.is_match(path)),
    }
}

fn path_mismatch(rule: &PathMatch) -> &'static str {
    match rule {
        PathMatch::Exact(_) => "Exact: the path is not exactly this (case-sensitive)",
        PathMatch::Prefix(_) => "Prefix: the path does not start with these whole segments",
        PathMatch::Regex(_) => "regex: does not match from the start of the path (case-insensitive)",
        PathMatch::FullRegex(_) => "RegularExpression: does not match the whole path (case-sensitive)",
    }
}

/// Compiles a regex path: as ingress-nginx's `location ~* "^<path>"` (case-insensitive, anchored
/// at the start) for [`Kind::Regex`], or as the Gateway API's `RegularExpression` (the whole path,
/// case-sensitive) for [`Kind::FullRegex`]. The size limit keeps a hostile path from costing much
/// memory; the `regex` crate's matching is linear in the input whatever the pattern.
fn compile_regex(path: &str, kind: Kind) -> Result<regex::Regex, RouteError> {
    if !path.starts_with('/') {
        return Err(RouteError::InvalidPath {
            path: path.to_owned(),
            reason: "a regex path must start with '/'",
        });
    }
    let (pattern, insensitive) = match kind {
        Kind::FullRegex => (format!("^(?:{path})$"), false),
        _ => (format!("^(?:{path})"), true),
    };
    regex::RegexBuilder::new(&pattern)
        .case_insensitive(insensitive)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| RouteError::InvalidPath {
            path: path.to_owned(),
            reason: "not a valid regular expression",
        })
}

// === impl PathTrie ===

impl PathTrie {
    fn new(claims: &BTreeMap<Claim, Claimants>) -> Self {
        let mut root = NodeBuilder::default();
        let mut regexes = Vec::new();
        for (claim, routes) in claims {
            if matches!(claim.kind, Kind::Regex | Kind::FullRegex) {
                // Claims sort longest first, so pushing in order is trying order. `add` refused
                // regexes that do not compile.
                if let Ok(re) = compile_regex(&claim.path, claim.kind) {
                    regexes.push((re, routes.clone().into_boxed_slice()));
                }
                continue;
            }
            let node = claim.segments().fold(&mut root, |node, segment| {
                node.children.entry(segment).or_default()
            });
            // Claims are unique per host, so each slot is filled at most once.
            let slot = match claim.kind {
                Kind::Exact => &mut node.exact,
                Kind::Prefix | Kind::Regex | Kind::FullRegex => &mut node.prefix,
            };
            *slot = routes.as_slice();
        }
        let mut trie = Self::flatten(root);
        trie.regexes = regexes.into();
        trie
    }

    /// Lays the tree out breadth first: the children of every node get consecutive edges, and
    /// node indices are handed out in the order the nodes leave the queue.
    fn flatten(root: NodeBuilder<'_>) -> Self {
        fn index(n: usize) -> u32 {
            u32::try_from(n).expect("a host's path table stays below 4 GiB")
        }
        let (mut nodes, mut edges, mut labels, mut lists) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut slot = |routes: &[Arc<Route>]| match routes {
            [] => (None, NO_LIST),
            [one] if one.conditions.is_none() => (Some(one.clone()), NO_LIST),
            [one] => (Some(one.clone()), CHECK),
            many => {
                lists.push(RouteList::from(many));
                (None, index(lists.len() - 1))
            }
        };
        let mut queue = VecDeque::from([root]);
        while let Some(node) = queue.pop_front() {
            let first_edge = index(edges.len());
            for (label, child) in node.children {
                let start = index(labels.len());
                labels.extend_from_slice(label.as_bytes());
                // The child is numbered after every node already created or waiting in the queue.
                let child_index = index(nodes.len() + 1 + queue.len());
                edges.push(Edge {
                    label: (start, index(labels.len())),
                    node: child_index,
                });
                queue.push_back(child);
            }
            let edge_range = (first_edge, index(edges.len()));
            let (exact, exact_list) = slot(node.exact);
            let (prefix, prefix_list) = slot(node.prefix);
            nodes.push(Node {
                edges: edge_range,
                exact,
                prefix,
                exact_list,
                prefix_list,
            });
        }
        Self {
            nodes: nodes.into(),
            edges: edges.into(),
            labels: labels.into(),
            regexes: Box::default(),
            lists: lists.into(),
        }
    }

    /// Walks the request's segments once, remembering the deepest Prefix rule passed that
    /// accepts the request: a deeper node is a longer path. An Exact rule on the last node is the
    /// whole path, which no Prefix rule can be longer than, and wins a tie with the Prefix rule on
    /// the same node.
    ///
    /// A host with regex paths tries them after an Exact match and before the Prefix one, as
    /// nginx tries `location =`, then regex locations in order, then the longest prefix.
    #[inline]
    fn lookup(&self, path: &str, facts: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        let (last, prefix) = self.walk(path, facts)?;
        if let Some(exact) = last.and_then(|node| self.accepting(&node.exact, node.exact_list, facts)) {
            return Some(exact);
        }
        if !self.regexes.is_empty() {
            let found = self
                .regexes
                .iter()
                .filter(|(re, _)| re.is_match(path))
                .find_map(|(_, routes)| accepting(routes, facts));
            if found.is_some() {
                return found;
            }
        }
        prefix
    }

    /// The node of the whole path (for its Exact slot), and the deepest Prefix route on the way
    /// that accepts the request. Prefix slots are judged as they are passed: for Ingress routes that is one
    /// `Option` check, as before conditions existed.
    #[inline]
    #[allow(clippy::type_complexity)]
    fn walk(&self, path: &str, facts: &RequestFacts<'_>) -> Option<(Option<&Node>, Option<&Arc<Route>>)> {
        let mut node = self.nodes.first()?;
        let mut best = self.accepting(&node.prefix, node.prefix_list, facts);
        for segment in path.strip_prefix('/')?.split('/') {
            let Some(next) = self.child(node, segment.as_bytes()) else {
                return Some((None, best));
            };
            node = next;
            if let Some(route) = self.accepting(&node.prefix, node.prefix_list, facts) {
                best = Some(route);
            }
        }
        Some((Some(node), best))
    }

    /// The first route of a node's slot (its route, or its list) that accepts the request.
    #[inline]
    fn accepting<'s>(
        &'s self,
        plain: &'s Option<Arc<Route>>,
        list: u32,
        facts: &RequestFacts<'_>,
    ) -> Option<&'s Arc<Route>> {
        if let Some(route) = plain {
            // Ingress routes (`NO_LIST`) are taken without reading the route.
            return (list != CHECK || route.accepts(facts)).then_some(route);
        }
        if list == NO_LIST {
            return None;
        }
        accepting(self.lists.get(list as usize)?, facts)
    }

    #[inline]
    fn child(&self, node: &Node, segment: &[u8]) -> Option<&Node> {
        let edges = self.edges.get(node.edges.0 as usize..node.edges.1 as usize)?;
        let label = |edge: &Edge| self.labels.get(edge.label.0 as usize..edge.label.1 as usize);
        let i = edges
            .binary_search_by(|edge| label(edge).cmp(&Some(segment)))
            .ok()?;
        self.nodes.get(edges[i].node as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{backend::BackendId, normalize::normalize_path};

    /// A path rule in test tables: `E("/foo")` is Exact, `P("/foo")` is Prefix.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum R {
        E(&'static str),
        P(&'static str),
    }
    use R::{E, P};

    impl R {
        fn path(self) -> PathMatch {
            match self {
                E(p) => PathMatch::Exact(p.to_owned()),
                P(p) => PathMatch::Prefix(p.to_owned()),
            }
        }
    }

    fn source(name: &str) -> RouteSource {
        RouteSource {
            kind: crate::routes::SourceKind::Ingress,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn route(path: PathMatch, name: &str) -> Route {
        let id = BackendId {
            namespace: "default".into(),
            service: name.into(),
            port: "80".into(),
        };
        Route {
            path,
            conditions: None,
            backend: Arc::new(Backend::new(id, vec![])),
            source: source(name),
            policies: Default::default(),
        }
    }

    fn exact(host: &str) -> HostMatch {
        HostMatch::Exact(host.to_owned())
    }

    fn wildcard(parent: &str) -> HostMatch {
        HostMatch::Wildcard(parent.to_owned())
    }

    /// One host (`Any`) with the given rules, each named after its position.
    fn table_of(rules: &[R]) -> RouteTable {
        let mut builder = RouteTableBuilder::new();
        for (i, rule) in rules.iter().enumerate() {
            builder
                .add(HostMatch::Any, route(rule.path(), &format!("r{i}")))
                .unwrap();
        }
        builder.build()
    }

    /// Looks a request path up the way the proxy does: normalized first.
    fn matched(table: &RouteTable, host: &str, request: &str) -> Option<PathMatch> {
        let path = normalize_path(request).unwrap();
        table.lookup(host, &path).map(|route| route.path.clone())
    }

    #[test]
    fn a_host_table_handed_in_serves_as_if_its_routes_were_added_one_by_one() {
        // The table of one host, compiled by a builder of its own (as a build of one host is).
        let mut one = RouteTableBuilder::new();
        one.add(exact("a.example"), route(P("/").path(), "old")).unwrap();
        one.add(exact("a.example"), route(E("/x").path(), "old")).unwrap();
        let a = one.host_table(&exact("a.example")).expect("the host has routes");
        assert!(one.host_table(&exact("a.example")).is_none(), "taken out");
        assert_eq!(a.routes().len(), 2);

        let mut whole = RouteTableBuilder::new();
        whole
            .add(exact("a.example"), route(P("/").path(), "old"))
            .unwrap();
        whole
            .add(exact("a.example"), route(E("/x").path(), "old"))
            .unwrap();
        whole.add(exact("b.example"), route(P("/b").path(), "b")).unwrap();
        let whole = whole.build();

        let mut handed = RouteTableBuilder::new();
        handed.add_host_table(exact("a.example"), a.clone());
        handed
            .add(exact("b.example"), route(P("/b").path(), "b"))
            .unwrap();
        let handed = handed.build();
        assert_eq!(handed, whole, "equal to the table built route by route");
        assert_eq!(matched(&handed, "a.example", "/x"), Some(E("/x").path()));
        assert_eq!(matched(&handed, "a.example", "/y"), Some(P("/").path()));
        assert_eq!(matched(&handed, "b.example", "/b/1"), Some(P("/b").path()));
        assert!(
            Arc::ptr_eq(
                handed.lookup("a.example", "/x").unwrap(),
                &a.routes()
                    .iter()
                    .find(|r| r.path == E("/x").path())
                    .unwrap()
                    .clone()
            ),
            "the handed-in routes are shared, not copied"
        );

        // More routes for a handed-in host (a Gateway API route on an Ingress host): the table's
        // routes are older, so they keep their paths, and new paths are added.
        let mut more = RouteTableBuilder::new();
        more.add_host_table(exact("a.example"), a);
        let err = more
            .add(exact("a.example"), route(E("/x").path(), "new"))
            .unwrap_err();
        assert!(matches!(err, RouteError::Conflict { ref existing, .. } if *existing.name == *"old"));
        more.add(exact("a.example"), route(P("/new").path(), "new"))
            .unwrap();
        let more = more.build();
        assert_eq!(more.len(), 3);
        assert_eq!(
            more.lookup("a.example", "/x").unwrap().source.name.as_ref(),
            "old"
        );
        assert_eq!(
            more.lookup("a.example", "/new/1").unwrap().source.name.as_ref(),
            "new"
        );
    }

    #[test]
    fn paths_match_as_the_kubernetes_documentation_table_says() {
        // (rules, request, the rule that must match)
        let cases: &[(&[R], &str, Option<R>)] = &[
            // Kubernetes docs, "Examples" table.
            (&[P("/")], "/", Some(P("/"))),
            (&[P("/")], "/foo", Some(P("/"))),
            (&[P("/")], "/foo/bar/", Some(P("/"))),
            (&[E("/foo")], "/foo", Some(E("/foo"))),
            (&[E("/foo")], "/bar", None),
            (&[E("/foo")], "/foo/", None),
            (&[E("/foo/")], "/foo", None),
            (&[P("/foo")], "/foo", Some(P("/foo"))),
            (&[P("/foo")], "/foo/", Some(P("/foo"))),
            (&[P("/foo/")], "/foo", Some(P("/foo/"))),
            (&[P("/foo/")], "/foo/", Some(P("/foo/"))),
            (&[P("/aaa/bb")], "/aaa/bbb", None),
            (&[P("/aaa/bbb")], "/aaa/bbb", Some(P("/aaa/bbb"))),
            (&[P("/aaa/bbb/")], "/aaa/bbb", Some(P("/aaa/bbb/"))),
            (&[P("/aaa/bbb")], "/aaa/bbb/", Some(P("/aaa/bbb"))),
            (&[P("/aaa/bbb")], "/aaa/bbb/ccc", Some(P("/aaa/bbb"))),
            (&[P("/aaa/bbb")], "/aaa/bbbxyz", None),
            (&[P("/"), P("/aaa")], "/aaa/ccc", Some(P("/aaa"))),
            (
                &[P("/"), P("/aaa"), P("/aaa/bbb")],
                "/aaa/bbb",
                Some(P("/aaa/bbb")),
            ),
            (&[P("/"), P("/aaa"), P("/aaa/bbb")], "/ccc", Some(P("/"))),
            (&[P("/aaa")], "/ccc", None),
            (&[P("/foo"), E("/foo")], "/foo", Some(E("/foo"))),
            (&[P("/foo")], "/FOO", None),
            // Longest prefix after a partial match further down.
            (&[P("/aaa"), P("/aaa/bbb")], "/aaa/bbc", Some(P("/aaa"))),
            (&[E("/foo/bar"), P("/foo")], "/foo/bar/baz", Some(P("/foo"))),
            (&[E("/foo/bar"), P("/foo")], "/foo/bar", Some(E("/foo/bar"))),
            (&[P("/foo")], "/foobar", None),
            (&[P("/foo")], "/foo//bar", Some(P("/foo"))),
            (&[E("/foo/")], "/foo/", Some(E("/foo/"))),
            (&[E("/")], "/", Some(E("/"))),
            (&[E("/")], "/x", None),
            (&[E("/"), P("/")], "/", Some(E("/"))),
            // Length is measured without the ignored trailing slash: Exact `/foo` is as long.
            (&[P("/foo/"), E("/foo")], "/foo", Some(E("/foo"))),
            (&[P("/foo"), E("/foo/")], "/foo/", Some(E("/foo/"))),
            (&[P("/foo"), E("/foo/")], "/foo", Some(P("/foo"))),
            // Rules are normalized like requests.
            (&[P("/~user")], "/%7Euser/x", Some(P("/~user"))),
            (&[E("/%7euser")], "/~user", Some(E("/%7euser"))),
            (&[E("/a{b}")], "/a{b}", Some(E("/a{b}"))),
            (&[E("/a{b}")], "/a%7bb%7D", Some(E("/a{b}"))),
            (&[P("/a/./b")], "/a/b/c", Some(P("/a/./b"))),
            (&[P("/a%2Fb")], "/a/b", None),
            (&[P("/a")], "/a%2Fb", None),
        ];
        for (rules, request, want) in cases {
            let table = table_of(rules);
            assert_eq!(
                matched(&table, "any.example", request),
                want.map(R::path),
                "rules {rules:?}, request {request:?}"
            );
        }
    }

    #[test]
    fn the_most_specific_host_wins_and_only_its_paths_count() {
        let mut builder = RouteTableBuilder::new();
        let rules = [
            (exact("foo.example.com"), P("/"), "exact"),
            (exact("api.example.com"), P("/v1"), "api"),
            (wildcard("example.com"), P("/"), "wild"),
            (wildcard("shop.test"), P("/cart"), "shop"),
            (HostMatch::Any, P("/"), "any"),
            (exact("only-any-miss.test"), E("/x"), "other"),
        ];
        for (host, rule, name) in rules {
            builder.add(host, route(rule.path(), name)).unwrap();
        }
        builder
            .set_default(route(PathMatch::Prefix("/".into()), "default"))
            .unwrap();
        let table = builder.build();

        // (host, path, the source that must answer)
        let cases = [
            ("foo.example.com", "/x", "exact"),
            ("bar.example.com", "/x", "wild"),
            ("api.example.com", "/v1/users", "api"),
            // No fall-through: api.example.com has its own rules, so neither the wildcard nor
            // `Any` is asked.
            ("api.example.com", "/other", "default"),
            ("x.shop.test", "/cart/1", "shop"),
            ("x.shop.test", "/other", "default"),
            // A wildcard takes exactly one label.
            ("example.com", "/x", "any"),
            ("a.b.example.com", "/x", "any"),
            ("shop.test", "/cart", "any"),
            ("elsewhere.org", "/x", "any"),
            ("localhost", "/x", "any"),
            ("only-any-miss.test", "/y", "default"),
        ];
        for (host, path, want) in cases {
            let got = table.lookup(host, path).map(|route| &*route.source.name);
            assert_eq!(got, Some(want), "{host}{path}");
        }
        assert_eq!(&*table.default_route().unwrap().source.name, "default");
    }

    #[test]
    fn without_a_default_route_a_miss_is_none() {
        let mut builder = RouteTableBuilder::new();
        builder.add(exact("a.test"), route(P("/a").path(), "a")).unwrap();
        builder
            .add(wildcard("b.test"), route(P("/b").path(), "b"))
            .unwrap();
        let table = builder.build();
        assert!(table.lookup("a.test", "/b").is_none());
        assert!(table.lookup("x.b.test", "/a").is_none());
        assert!(table.lookup("c.test", "/a").is_none());
        assert!(table.default_route().is_none());
        assert!(RouteTable::default().lookup("a.test", "/").is_none());
    }

    #[test]
    fn a_path_that_does_not_start_with_a_slash_matches_no_rule() {
        let mut builder = RouteTableBuilder::new();
        builder.add(HostMatch::Any, route(P("/").path(), "root")).unwrap();
        builder.set_default(route(P("/").path(), "default")).unwrap();
        let table = builder.build();
        for path in ["", "*", "a"] {
            assert_eq!(
                &*table.lookup("a.test", path).unwrap().source.name,
                "default",
                "{path:?}"
            );
        }
    }

    #[test]
    fn builder_canonicalizes_hosts() {
        let mut builder = RouteTableBuilder::new();
        builder
            .add(exact("Foo.Example.COM."), route(P("/").path(), "foo"))
            .unwrap();
        builder
            .add(wildcard("*.Example.org"), route(P("/").path(), "org"))
            .unwrap();
        let table = builder.build();
        assert_eq!(&*table.lookup("foo.example.com", "/").unwrap().source.name, "foo");
        assert_eq!(&*table.lookup("a.example.org", "/").unwrap().source.name, "org");
        let hosts: Vec<_> = table.iter().map(|(host, _)| host.to_string()).collect();
        assert_eq!(hosts, ["foo.example.com", "*.example.org"]);
    }

    #[test]
    fn the_first_claim_of_a_host_path_and_type_wins() {
        // (host, first, second, conflict?)
        let cases: &[(HostMatch, R, HostMatch, R, bool)] = &[
            (exact("a.test"), P("/foo"), exact("a.test"), P("/foo"), true),
            (exact("a.test"), P("/foo"), exact("a.test"), P("/foo/"), true),
            (exact("a.test"), P("/"), exact("a.test"), P("//"), true),
            (exact("a.test"), E("/foo"), exact("a.test"), E("/foo"), true),
            (exact("a.test"), E("/~foo"), exact("a.test"), E("/%7Efoo"), true),
            (exact("a.test"), E("/foo"), exact("A.test"), E("/foo"), true),
            (wildcard("a.test"), P("/"), wildcard("a.test"), P("/"), true),
            (HostMatch::Any, P("/"), HostMatch::Any, P("/"), true),
            (exact("a.test"), E("/foo"), exact("a.test"), P("/foo"), false),
            (exact("a.test"), E("/foo"), exact("a.test"), E("/foo/"), false),
            (exact("a.test"), P("/foo"), exact("b.test"), P("/foo"), false),
            (exact("a.test"), P("/foo"), wildcard("a.test"), P("/foo"), false),
            (exact("a.test"), P("/foo"), HostMatch::Any, P("/foo"), false),
            (exact("a.test"), P("/foo"), exact("a.test"), P("/FOO"), false),
        ];
        for (host1, first, host2, second, conflict) in cases {
            let mut builder = RouteTableBuilder::new();
            builder.add(host1.clone(), route(first.path(), "older")).unwrap();
            let got = builder.add(host2.clone(), route(second.path(), "newer"));
            if *conflict {
                let want = RouteError::Conflict {
                    host: host1.clone().canonical().to_string(),
                    path: second.path(),
                    existing: source("older"),
                };
                assert_eq!(got, Err(want), "{host1} {first:?} then {host2} {second:?}");
            } else {
                assert_eq!(got, Ok(()), "{host1} {first:?} then {host2} {second:?}");
            }
        }
    }

    #[test]
    fn a_refused_route_leaves_the_winner_in_place() {
        let mut builder = RouteTableBuilder::new();
        builder
            .add(exact("a.test"), route(P("/foo").path(), "older"))
            .unwrap();
        assert!(builder
            .add(exact("a.test"), route(P("/foo/").path(), "newer"))
            .is_err());
        let table = builder.build();
        assert_eq!(table.len(), 1);
        assert_eq!(&*table.lookup("a.test", "/foo/x").unwrap().source.name, "older");
    }

    #[test]
    fn conflicts_name_the_host_as_the_ingress_spells_it() {
        let mut builder = RouteTableBuilder::new();
        for host in [exact("a.test"), wildcard("a.test"), HostMatch::Any] {
            builder.add(host, route(P("/").path(), "older")).unwrap();
        }
        let hosts = [
            (exact("a.test"), "a.test"),
            (wildcard("a.test"), "*.a.test"),
            (HostMatch::Any, "*"),
        ];
        for (host, shown) in hosts {
            match builder.add(host, route(P("/").path(), "newer")) {
                Err(RouteError::Conflict { host, .. }) => assert_eq!(host, shown),
                other => panic!("{shown}: {other:?}"),
            }
        }
        let message = builder
            .add(exact("a.test"), route(P("/").path(), "newer"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            r#"a.test Prefix("/") is already routed by default/older"#
        );
    }

    #[test]
    fn the_first_default_route_wins() {
        let mut builder = RouteTableBuilder::new();
        builder.set_default(route(P("/").path(), "older")).unwrap();
        let got = builder.set_default(route(P("/").path(), "newer"));
        let want = RouteError::Conflict {
            host: "(default)".into(),
            path: P("/").path(),
            existing: source("older"),
        };
        assert_eq!(got, Err(want));
        let table = builder.build();
        assert_eq!(&*table.default_route().unwrap().source.name, "older");
        assert!(table.is_empty(), "the default route is not counted");
    }

    #[test]
    fn paths_that_cannot_be_routed_are_refused() {
        let cases: &[(R, &str)] = &[
            (P("foo"), "path does not start with '/'"),
            (E(""), "path does not start with '/'"),
            (P("/../x"), "path escapes the root with '..'"),
            (E("/%zz"), "invalid percent-encoding"),
            (P("/a%00"), "NUL byte"),
            (E("/a\nb"), "control character"),
        ];
        for (rule, reason) in cases {
            let mut builder = RouteTableBuilder::new();
            let got = builder.add(HostMatch::Any, route(rule.path(), "bad"));
            let (E(path) | P(path)) = *rule;
            assert_eq!(
                got,
                Err(RouteError::InvalidPath {
                    path: path.to_owned(),
                    reason
                }),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn iter_lists_hosts_in_order_and_paths_by_precedence() {
        let mut builder = RouteTableBuilder::new();
        let rules = [
            (HostMatch::Any, P("/")),
            (wildcard("b.test"), P("/")),
            (exact("z.test"), P("/")),
            (exact("a.test"), P("/")),
            (exact("a.test"), E("/")),
            (exact("a.test"), P("/bb/")),
            (exact("a.test"), E("/bb")),
            (exact("a.test"), P("/aa")),
            (exact("a.test"), E("/aaaa")),
            (exact("a.test"), P("/a/b/c")),
            (wildcard("a.test"), P("/")),
        ];
        for (i, (host, rule)) in rules.into_iter().enumerate() {
            builder.add(host, route(rule.path(), &format!("r{i}"))).unwrap();
        }
        let table = builder.build();
        let listed: Vec<(String, PathMatch)> = table
            .iter()
            .map(|(host, route)| (host.to_string(), route.path.clone()))
            .collect();
        let want = [
            ("a.test", P("/a/b/c")),
            ("a.test", E("/aaaa")),
            ("a.test", E("/bb")),
            ("a.test", P("/aa")),
            ("a.test", P("/bb/")),
            ("a.test", E("/")),
            ("a.test", P("/")),
            ("z.test", P("/")),
            ("*.a.test", P("/")),
            ("*.b.test", P("/")),
            ("*", P("/")),
        ]
        .map(|(host, rule)| (host.to_owned(), rule.path()));
        assert_eq!(listed, want);
        assert_eq!(table.len(), 11);
        assert_eq!(table.host_count(), 5);
        assert!(!table.is_empty());
    }

    #[test]
    fn an_empty_table_is_empty() {
        let table = RouteTableBuilder::new().build();
        assert!(table.is_empty());
        assert_eq!(table.host_count(), 0);
        assert_eq!(table.iter().count(), 0);
        assert!(table.lookup("a.test", "/").is_none());
    }

    /// The spec read literally: every rule that matches, the longest (without a Prefix's
    /// trailing slash) wins, Exact before Prefix on a tie.
    fn naive_lookup(rules: &[(Kind, String)], request: &str) -> Option<(Kind, String)> {
        rules
            .iter()
            .filter_map(|(kind, path)| {
                let rule = match kind {
                    Kind::Exact | Kind::Regex | Kind::FullRegex => path.as_str(),
                    Kind::Prefix => path.trim_end_matches('/'),
                };
                let matches = match kind {
                    Kind::Exact => request == rule,
                    Kind::Prefix => {
                        request.starts_with(rule)
                            && matches!(request.as_bytes().get(rule.len()), None | Some(b'/'))
                    }
                    Kind::Regex | Kind::FullRegex => {
                        unreachable!("the random tables have no regex paths")
                    }
                };
                matches.then(|| (Reverse(rule.len()), *kind, rule.to_owned()))
            })
            .min()
            .map(|(_, kind, path)| (kind, path))
    }

    #[test]
    fn lookup_agrees_with_a_literal_reading_of_the_spec_on_random_tables() {
        let segments = ["a", "aa", "b", "", "ab", "a.b"];
        let mut rng = fastrand::Rng::with_seed(0x9a47);
        let random_path = |rng: &mut fastrand::Rng| {
            let mut path = String::new();
            for _ in 0..rng.usize(0..4) {
                path.push('/');
                path.push_str(segments[rng.usize(..segments.len())]);
            }
            if path.is_empty() || rng.u8(..4) == 0 {
                path.push('/');
            }
            path
        };
        for _ in 0..5_000 {
            let mut builder = RouteTableBuilder::new();
            let mut rules = Vec::new();
            for _ in 0..rng.usize(1..8) {
                let path = random_path(&mut rng);
                let (kind, rule) = if rng.bool() {
                    (Kind::Exact, PathMatch::Exact(path.clone()))
                } else {
                    (Kind::Prefix, PathMatch::Prefix(path.clone()))
                };
                if builder.add(HostMatch::Any, route(rule, "r")).is_ok() {
                    rules.push((kind, path));
                }
            }
            let table = builder.build();
            for _ in 0..20 {
                let request = random_path(&mut rng);
                let got = table.lookup("h", &request).map(|route| match &route.path {
                    PathMatch::Exact(p) => (Kind::Exact, p.clone()),
                    PathMatch::Prefix(p) => (Kind::Prefix, p.trim_end_matches('/').to_owned()),
                    PathMatch::Regex(p) => (Kind::Regex, p.clone()),
                    PathMatch::FullRegex(p) => (Kind::FullRegex, p.clone()),
                });
                assert_eq!(
                    got,
                    naive_lookup(&rules, &request),
                    "rules {rules:?}, request {request:?}"
                );
            }
        }
    }

    fn backend_of<'t>(t: &'t RouteTable, host: &str, path: &str) -> Option<&'t str> {
        t.lookup(host, path).map(|r| &*r.backend.id.service)
    }

    #[test]
    fn regex_paths_are_tried_longest_first_case_insensitive_and_anchored_at_the_start() {
        // docs/user-guide/ingress-path-matching.md, "Path Priority".
        let mut b = RouteTableBuilder::new();
        let host = || exact("test.com");
        b.add(host(), route(PathMatch::Regex("/foo/bar".into()), "service1"))
            .unwrap();
        b.add(host(), route(PathMatch::Regex("/foo/bar/".into()), "service2"))
            .unwrap();
        b.add(
            host(),
            route(PathMatch::Regex("/foo/bar/(.+)".into()), "service3"),
        )
        .unwrap();
        let t = b.build();
        assert_eq!(backend_of(&t, "test.com", "/foo/bar/1"), Some("service3"));
        assert_eq!(backend_of(&t, "test.com", "/foo/bar/"), Some("service2"));
        assert_eq!(backend_of(&t, "test.com", "/foo/bar"), Some("service1"));
        assert_eq!(backend_of(&t, "test.com", "/FOO/BAR/x"), Some("service3"));
        assert_eq!(
            backend_of(&t, "test.com", "/foo/barbaz"),
            Some("service1"),
            "not end-anchored"
        );
        assert_eq!(backend_of(&t, "test.com", "/x/foo/bar"), None, "start-anchored");
    }

    #[test]
    fn the_documented_first_match_surprise_holds() {
        // ingress-path-matching.md, "Warning": /foo/bar/[A-Z0-9]{3} is longer, so it is tried
        // first and takes /foo/bar/bar.
        let mut b = RouteTableBuilder::new();
        b.add(
            exact("test.com"),
            route(PathMatch::Regex("/foo/bar/bar".into()), "bar"),
        )
        .unwrap();
        b.add(
            exact("test.com"),
            route(PathMatch::Regex("/foo/bar/[A-Z0-9]{3}".into()), "any3"),
        )
        .unwrap();
        let t = b.build();
        assert_eq!(backend_of(&t, "test.com", "/foo/bar/bar"), Some("any3"));
    }

    #[test]
    fn exact_paths_win_before_regexes_and_prefixes_come_after() {
        let mut b = RouteTableBuilder::new();
        b.add(exact("h"), route(PathMatch::Exact("/api/v1".into()), "exact"))
            .unwrap();
        b.add(
            exact("h"),
            route(PathMatch::Regex("/api/v[0-9]+".into()), "regex"),
        )
        .unwrap();
        b.add(exact("h"), route(PathMatch::Prefix("/".into()), "prefix"))
            .unwrap();
        let t = b.build();
        assert_eq!(backend_of(&t, "h", "/api/v1"), Some("exact"));
        assert_eq!(backend_of(&t, "h", "/api/v2"), Some("regex"));
        assert_eq!(backend_of(&t, "h", "/other"), Some("prefix"));
    }

    #[test]
    fn gateway_api_regexes_match_the_whole_path_case_sensitive() {
        let mut b = RouteTableBuilder::new();
        b.add(
            exact("h"),
            route(PathMatch::FullRegex("/api/v[0-9]+".into()), "full"),
        )
        .unwrap();
        b.add(exact("h"), route(PathMatch::Exact("/api/v1".into()), "exact"))
            .unwrap();
        b.add(exact("h"), route(PathMatch::Prefix("/".into()), "prefix"))
            .unwrap();
        // The same text as an ingress-nginx regex is another claim: both semantics live on a host.
        b.add(
            exact("h"),
            route(PathMatch::Regex("/api/v[0-9]+".into()), "nginx"),
        )
        .unwrap();
        let t = b.build();
        assert_eq!(backend_of(&t, "h", "/api/v1"), Some("exact"), "Exact first");
        assert_eq!(backend_of(&t, "h", "/api/v22"), Some("full"));
        // Not end-anchored and case-insensitive: only the ingress-nginx regex takes these.
        assert_eq!(backend_of(&t, "h", "/api/v2/users"), Some("nginx"));
        assert_eq!(backend_of(&t, "h", "/API/V2"), Some("nginx"));

        let mut b = RouteTableBuilder::new();
        b.add(
            exact("h"),
            route(PathMatch::FullRegex("/api/v[0-9]+".into()), "full"),
        )
        .unwrap();
        b.add(exact("h"), route(PathMatch::Prefix("/".into()), "prefix"))
            .unwrap();
        let t = b.build();
        assert_eq!(backend_of(&t, "h", "/api/v2"), Some("full"));
        assert_eq!(
            backend_of(&t, "h", "/api/v2/users"),
            Some("prefix"),
            "whole path only"
        );
        assert_eq!(backend_of(&t, "h", "/API/V2"), Some("prefix"), "case-sensitive");
        assert_eq!(backend_of(&t, "h", "/x/api/v2"), Some("prefix"), "start-anchored");

        assert!(PathMatch::FullRegex("/a(".into()).validate().is_err());
        assert!(PathMatch::FullRegex("a".into()).validate().is_err());
        assert!(PathMatch::FullRegex("/a|/b".into()).validate().is_ok());
    }

    #[test]
    fn bad_and_duplicate_regexes_are_refused() {
        let mut b = RouteTableBuilder::new();
        let err = b
            .add(exact("h"), route(PathMatch::Regex("/a(".into()), "x"))
            .unwrap_err();
        assert!(matches!(err, RouteError::InvalidPath { .. }), "{err:?}");
        let err = b
            .add(exact("h"), route(PathMatch::Regex("a.*".into()), "x"))
            .unwrap_err();
        assert!(matches!(err, RouteError::InvalidPath { .. }), "{err:?}");
        let huge = format!("/{}", "(a{1000}){1000}");
        assert!(b.add(exact("h"), route(PathMatch::Regex(huge), "x")).is_err());
        b.add(exact("h"), route(PathMatch::Regex("/a.*".into()), "first"))
            .unwrap();
        let err = b
            .add(exact("h"), route(PathMatch::Regex("/a.*".into()), "second"))
            .unwrap_err();
        assert!(matches!(err, RouteError::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn explain_names_the_chosen_rule_and_why_the_others_lost() {
        let mut b = RouteTableBuilder::new();
        b.add(exact("shop.example"), route(PathMatch::Prefix("/".into()), "web"))
            .unwrap();
        b.add(
            exact("shop.example"),
            route(PathMatch::Prefix("/api".into()), "api"),
        )
        .unwrap();
        b.add(
            exact("shop.example"),
            route(PathMatch::Exact("/api/v1".into()), "v1"),
        )
        .unwrap();
        b.add(wildcard("example"), route(PathMatch::Prefix("/".into()), "wild"))
            .unwrap();
        let t = b.build();
        let headers = http::HeaderMap::new();
        let get = RequestFacts::get(&headers);
        let e = t.explain("shop.example", "/api/users", &get);
        assert_eq!(e.host_entry, Some(exact("shop.example")));
        assert_eq!(&*e.chosen.unwrap().backend.id.service, "api");
        assert!(!e.by_default);
        let why = |svc: &str| {
            e.not_chosen
                .iter()
                .find(|n| &*n.route.backend.id.service == svc)
                .map(|n| n.why.clone())
                .unwrap()
        };
        assert!(why("web").contains("matched first"), "{}", why("web"));
        assert!(why("v1").starts_with("Exact"), "{}", why("v1"));
        assert!(why("wild").contains("less specific"), "{}", why("wild"));
        let none = t.explain("other.test", "/", &get);
        assert!(none.host_entry.is_none() && none.chosen.is_none());
    }

    // --- Gateway API (any-depth) wildcards ---

    fn any_depth(parent: &str) -> HostMatch {
        HostMatch::WildcardAnyDepth(parent.to_owned())
    }

    /// A table with one `Prefix /` route per host entry, each named after its entry.
    fn hosts_table(hosts: &[HostMatch]) -> RouteTable {
        let mut b = RouteTableBuilder::new();
        for h in hosts {
            b.add(h.clone(), route(P("/").path(), &h.to_string())).unwrap();
        }
        b.build()
    }

    /// The name of the host entry whose route answers `host` (`None`: no entry, no default).
    fn entry_for<'t>(t: &'t RouteTable, host: &str) -> Option<&'t str> {
        t.lookup(host, "/").map(|r| &*r.source.name)
    }

    #[test]
    fn a_patched_table_is_the_table_built_from_its_hosts() {
        let compiled = |h: &HostMatch, name: &str| {
            let mut b = RouteTableBuilder::new();
            b.add(h.clone(), route(P("/").path(), name)).unwrap();
            b.host_table(h).unwrap()
        };
        let (a, b, w, c) = (
            exact("a.test"),
            exact("B.test"),
            wildcard("w.test"),
            exact("c.test"),
        );
        let mut first = RouteTableBuilder::new();
        first.set_default(route(P("/").path(), "default")).unwrap();
        for (h, name) in [(&a, "a1"), (&b, "b1"), (&w, "w1"), (&HostMatch::Any, "any1")] {
            first.add_host_table(h.clone(), compiled(h, name));
        }
        let first = first.build();
        let kept = first.host_tables().next().cloned().unwrap();
        let patched = first.patched([
            (b.clone(), Some(compiled(&b, "b2"))),
            (w.clone(), None),
            (c.clone(), Some(compiled(&c, "c1"))),
            (HostMatch::Any, None),
            (exact("never.test"), None),
        ]);
        let mut whole = RouteTableBuilder::new();
        whole.set_default(route(P("/").path(), "default")).unwrap();
        for (h, name) in [(&a, "a1"), (&b, "b2"), (&c, "c1")] {
            whole.add(h.clone(), route(P("/").path(), name)).unwrap();
        }
        let whole = whole.build();
        assert!(patched == whole, "{patched:?} != {whole:?}");
        assert_eq!((patched.len(), patched.host_count()), (3, 3));
        assert_eq!(patched.backend_keys(), whole.backend_keys());
        assert_eq!(patched.addresses(), whole.addresses());
        assert_eq!(entry_for(&patched, "b.test"), Some("b2"));
        assert_eq!(entry_for(&patched, "c.test"), Some("c1"));
        assert_eq!(
            entry_for(&patched, "x.w.test"),
            Some("default"),
            "the wildcard is gone"
        );
        assert_eq!(entry_for(&patched, "other.test"), Some("default"), "so is Any");
        assert!(
            Arc::ptr_eq(patched.host_tables().next().unwrap(), &kept),
            "a kept host is the same table"
        );
        // The table patched is what it was.
        assert_eq!((first.len(), first.host_count()), (4, 4));
        assert_eq!(entry_for(&first, "b.test"), Some("b1"));
        assert_eq!(entry_for(&first, "x.w.test"), Some("w1"));
    }

    /// Patching a table of many hosts (many shards) again and again gives what building the same
    /// hosts from nothing gives: the same routes, lookups, addresses and backends; and a patch
    /// shares the shards it did not touch.
    #[test]
    fn patching_many_hosts_again_and_again_is_building_them_anew() {
        // A small deterministic generator (xorshift): the sequence is the same every run.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let host = |i: usize| match i % 10 {
            0 => wildcard(&format!("w{i}.test")),
            1 => any_depth(&format!("d{i}.test")),
            2 if i == 2 => HostMatch::Any,
            _ => exact(&format!("h{i}.test")),
        };
        // Each host's route goes to one of a few Services with one of a few addresses, so hosts
        // share addresses and backends, and a change may leave one in use elsewhere or not.
        let compiled = |h: &HostMatch, version: usize| {
            let id = BackendId {
                namespace: "default".into(),
                service: format!("s{}", version % 7).into(),
                port: "80".into(),
            };
            let endpoint = crate::backend::Endpoint {
                addr: std::net::SocketAddr::from(([10, 0, 0, (version % 5) as u8], 8080)),
            };
            let mut r = route(P("/").path(), &format!("v{version}"));
            r.backend = Arc::new(Backend::new(id, vec![endpoint]));
            let mut b = RouteTableBuilder::new();
            b.add(h.clone(), r).unwrap();
            b.host_table(h).unwrap()
        };
        let mut live: BTreeMap<usize, (usize, Arc<HostTable>)> = BTreeMap::new();
        let mut first = RouteTableBuilder::new();
        for i in 0..300 {
            let t = compiled(&host(i), i);
            first.add_host_table(host(i), t.clone());
            live.insert(i, (i, t));
        }
        let mut table = first.build();
        assert!(table.0.shards.len() >= 4, "{} shards", table.0.shards.len());
        for round in 0..40 {
            let mut changes = Vec::new();
            for _ in 0..next(6) {
                let i = next(320);
                if next(4) == 0 {
                    live.remove(&i);
                    changes.push((host(i), None));
                } else {
                    let version = next(1000);
                    let t = compiled(&host(i), version);
                    live.insert(i, (version, t.clone()));
                    changes.push((host(i), Some(t)));
                }
            }
            let patched = table.patched(changes.clone());
            let mut whole = RouteTableBuilder::new();
            for (i, (_, t)) in &live {
                whole.add_host_table(host(*i), t.clone());
            }
            let whole = whole.build();
            assert!(patched == whole, "round {round}");
            assert_eq!(patched.len(), whole.len(), "round {round}");
            assert_eq!(patched.host_count(), whole.host_count(), "round {round}");
            assert_eq!(patched.addresses(), whole.addresses(), "round {round}");
            assert_eq!(patched.backend_keys(), whole.backend_keys(), "round {round}");
            assert_eq!(
                patched
                    .iter()
                    .map(|(h, r)| (h.clone(), r.clone()))
                    .collect::<Vec<_>>(),
                whole
                    .iter()
                    .map(|(h, r)| (h.clone(), r.clone()))
                    .collect::<Vec<_>>(),
                "round {round}"
            );
            for i in 0..320 {
                let name = match host(i) {
                    HostMatch::Exact(h) => h,
                    HostMatch::Wildcard(p) => format!("x.{p}"),
                    HostMatch::WildcardAnyDepth(p) => format!("x.y.{p}"),
                    HostMatch::Any => "nowhere.test".into(),
                };
                let source = |t: &RouteTable| t.lookup(&name, "/").map(|r| r.source.name.clone());
                assert_eq!(source(&patched), source(&whole), "round {round}, {name}");
            }
            // The shards of hosts that did not change are the patched table's own.
            let touched: std::collections::HashSet<usize> = changes
                .iter()
                .filter_map(|(h, _)| entry_name(h).map(|n| shard_of(n, table.0.shards.len())))
                .collect();
            for (i, (a, b)) in table.0.shards.iter().zip(patched.0.shards.iter()).enumerate() {
                if !touched.contains(&i) {
                    assert!(Arc::ptr_eq(a, b), "round {round}: shard {i} copied");
                }
            }
            table = patched;
        }
    }

    #[test]
    fn a_gateway_wildcard_matches_any_number_of_labels_but_never_its_parent() {
        let t = hosts_table(&[any_depth("example.com")]);
        for host in ["a.example.com", "a.b.example.com", "x.y.z.example.com"] {
            assert_eq!(entry_for(&t, host), Some("**.example.com"), "{host}");
        }
        for host in [
            "example.com",
            "com",
            "aexample.com",
            "a.example.org",
            "a.example.com.evil",
            ".example.com",
            "a..example.com",
        ] {
            assert_eq!(entry_for(&t, host), None, "{host}");
        }
    }

    #[test]
    fn an_ingress_wildcard_still_matches_exactly_one_label() {
        let t = hosts_table(&[wildcard("example.com")]);
        assert_eq!(entry_for(&t, "a.example.com"), Some("*.example.com"));
        assert_eq!(entry_for(&t, "a.b.example.com"), None);
        assert_eq!(entry_for(&t, "example.com"), None);
    }

    #[test]
    fn the_most_specific_host_entry_wins_between_exact_one_label_and_any_depth_entries() {
        // (host entries, request host, the entry that must answer)
        let cases: &[(&[HostMatch], &str, Option<&str>)] = &[
            // Exact beats both wildcards of its parent.
            (
                &[exact("a.b.com"), wildcard("b.com"), any_depth("b.com")],
                "a.b.com",
                Some("a.b.com"),
            ),
            // Same parent: the one-label wildcard first, the any-depth one for deeper hosts.
            (
                &[wildcard("b.com"), any_depth("b.com")],
                "a.b.com",
                Some("*.b.com"),
            ),
            (
                &[wildcard("b.com"), any_depth("b.com")],
                "x.a.b.com",
                Some("**.b.com"),
            ),
            (
                &[any_depth("b.com"), wildcard("b.com")],
                "a.b.com",
                Some("*.b.com"),
            ),
            // A longer parent beats a shorter one, whichever kind either is.
            (
                &[any_depth("com"), any_depth("b.com"), any_depth("a.b.com")],
                "x.a.b.com",
                Some("**.a.b.com"),
            ),
            (
                &[any_depth("com"), any_depth("b.com")],
                "x.a.b.com",
                Some("**.b.com"),
            ),
            (
                &[wildcard("a.b.com"), any_depth("b.com")],
                "x.a.b.com",
                Some("*.a.b.com"),
            ),
            (
                &[any_depth("a.b.com"), wildcard("b.com")],
                "x.a.b.com",
                Some("**.a.b.com"),
            ),
            // A one-label wildcard of a further parent never matches; the any-depth one does.
            (
                &[wildcard("b.com"), any_depth("com")],
                "x.a.b.com",
                Some("**.com"),
            ),
            // Exact of another host, the parent itself: neither matches; `Any` answers.
            (
                &[exact("b.com"), any_depth("b.com"), HostMatch::Any],
                "b.com",
                Some("b.com"),
            ),
            (&[any_depth("b.com"), HostMatch::Any], "b.com", Some("*")),
            (&[any_depth("b.com"), HostMatch::Any], "x.c.com", Some("*")),
            (
                &[any_depth("b.com"), HostMatch::Any],
                "x.y.b.com",
                Some("**.b.com"),
            ),
        ];
        for (hosts, host, want) in cases {
            let t = hosts_table(hosts);
            assert_eq!(entry_for(&t, host), *want, "{host} among {hosts:?}");
        }
    }

    #[test]
    fn a_matching_any_depth_entry_without_the_path_does_not_fall_through_to_a_shorter_parent() {
        let mut b = RouteTableBuilder::new();
        b.add(any_depth("b.com"), route(P("/api").path(), "api")).unwrap();
        b.add(any_depth("com"), route(P("/").path(), "root")).unwrap();
        b.set_default(route(P("/").path(), "default")).unwrap();
        let t = b.build();
        let name = |host: &str, path: &str| t.lookup(host, path).map(|r| &*r.source.name);
        assert_eq!(name("x.y.b.com", "/api/v1"), Some("api"));
        assert_eq!(name("x.y.b.com", "/other"), Some("default"));
        assert_eq!(name("x.y.c.com", "/other"), Some("root"));
    }

    /// A literal reading of both specs: the entries that match `host`, the most specific first
    /// (exact, then the most characters in the matching hostname, which for suffixes of one host
    /// is the longest parent, the one-label wildcard before the any-depth one of the same
    /// parent), `Any` last.
    fn naive_host_entry(entries: &[HostMatch], host: &str) -> Option<HostMatch> {
        let labels = |h: &str| h.split('.').count();
        let matches = |e: &HostMatch| match e {
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(p) => host
                .strip_suffix(p.as_str())
                .and_then(|l| l.strip_suffix('.'))
                .is_some_and(|l| !l.is_empty() && !l.contains('.')),
            HostMatch::WildcardAnyDepth(p) => labels(host) > labels(p) && host.ends_with(&format!(".{p}")),
            HostMatch::Any => true,
        };
        let rank = |e: &HostMatch| match e {
            HostMatch::Exact(_) => (3, 0, 1),
            HostMatch::Wildcard(p) => (2, p.len(), 1),
            HostMatch::WildcardAnyDepth(p) => (2, p.len(), 0),
            HostMatch::Any => (1, 0, 0),
        };
        entries
            .iter()
            .filter(|e| matches(e))
            .max_by_key(|e| rank(e))
            .cloned()
    }

    #[test]
    fn host_lookup_agrees_with_a_literal_reading_of_both_specs_on_random_tables() {
        let labels = ["a", "b", "ab"];
        let mut rng = fastrand::Rng::with_seed(0x40f7);
        let random_name = |rng: &mut fastrand::Rng, min: usize| {
            let n = rng.usize(min..5);
            (0..n)
                .map(|_| labels[rng.usize(..labels.len())])
                .collect::<Vec<_>>()
                .join(".")
        };
        for _ in 0..3_000 {
            let mut entries = Vec::new();
            for _ in 0..rng.usize(1..8) {
                let name = random_name(&mut rng, 1);
                entries.push(match rng.u8(..7) {
                    0 | 1 => HostMatch::Exact(name),
                    2 | 3 => HostMatch::Wildcard(name),
                    4 | 5 => HostMatch::WildcardAnyDepth(name),
                    _ => HostMatch::Any,
                });
            }
            entries.sort();
            entries.dedup();
            let table = hosts_table(&entries);
            for _ in 0..20 {
                let host = random_name(&mut rng, 1);
                let want = naive_host_entry(&entries, &host).map(|e| e.to_string());
                assert_eq!(
                    entry_for(&table, &host),
                    want.as_deref(),
                    "host {host:?} among {entries:?}"
                );
            }
        }
    }

    #[test]
    fn any_depth_entries_display_apart_and_list_after_the_one_label_ones() {
        let mut b = RouteTableBuilder::new();
        // Spelled as written in the object, or as displayed: the same entry.
        b.add(
            HostMatch::WildcardAnyDepth("*.Example.COM.".into()),
            route(P("/").path(), "gateway"),
        )
        .unwrap();
        let again = b.add(
            HostMatch::WildcardAnyDepth("**.example.com".into()),
            route(P("/").path(), "again"),
        );
        assert_eq!(
            again,
            Err(RouteError::Conflict {
                host: "**.example.com".into(),
                path: P("/").path(),
                existing: source("gateway"),
            })
        );
        b.add(wildcard("*.example.com"), route(P("/").path(), "ingress"))
            .unwrap();
        b.add(HostMatch::Any, route(P("/").path(), "any")).unwrap();
        b.add(exact("z.example.com"), route(P("/").path(), "exact"))
            .unwrap();
        let t = b.build();
        let hosts: Vec<String> = t.iter().map(|(h, _)| h.to_string()).collect();
        assert_eq!(hosts, ["z.example.com", "*.example.com", "**.example.com", "*"]);
        assert_eq!(t.host_count(), 4);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn explain_lists_every_matching_wildcard_from_the_most_specific() {
        let t = hosts_table(&[
            any_depth("com"),
            any_depth("b.com"),
            wildcard("a.b.com"),
            any_depth("a.b.com"),
            any_depth("c.com"),
            HostMatch::Any,
        ]);
        let headers = http::HeaderMap::new();
        let get = RequestFacts::get(&headers);
        let e = t.explain("x.a.b.com", "/", &get);
        assert_eq!(e.host_entry, Some(wildcard("a.b.com")));
        assert_eq!(&*e.chosen.unwrap().source.name, "*.a.b.com");
        let others: Vec<String> = e.not_chosen.iter().map(|n| n.host.to_string()).collect();
        assert_eq!(others, ["**.a.b.com", "**.b.com", "**.com", "*"]);
        assert!(e.not_chosen.iter().all(|n| n.why.contains("less specific")));
        let e = t.explain("y.x.a.b.com", "/", &get);
        assert_eq!(e.host_entry, Some(any_depth("a.b.com")));
        let e = t.explain("com", "/", &get);
        assert_eq!(e.host_entry, Some(HostMatch::Any));
    }

    // --- routes with conditions (Gateway API matches) ---

    use crate::policy::{RequestConditions, ValueMatch};
    use http::{HeaderMap, HeaderName, Method};

    fn when(
        method: Option<Method>,
        headers: &[(&'static str, &str)],
        query: &[(&str, &str)],
    ) -> RequestConditions {
        RequestConditions {
            method,
            headers: headers
                .iter()
                .map(|(k, v)| (HeaderName::from_static(k), ValueMatch::Exact((*v).into())))
                .collect(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).into(), ValueMatch::Exact((*v).into())))
                .collect(),
            tls: None,
        }
    }

    fn conditional(path: PathMatch, name: &str, c: Option<RequestConditions>) -> Route {
        Route {
            conditions: c.map(Arc::new),
            ..route(path, name)
        }
    }

    /// The name of the route a request takes on host `h`.
    fn served<'t>(
        t: &'t RouteTable,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        query: Option<&str>,
    ) -> Option<&'t str> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, v.parse().unwrap());
        }
        let facts = RequestFacts {
            method: &method,
            headers: &h,
            query,
            tls: false,
        };
        t.lookup_request("h", path, &facts).map(|r| &*r.source.name)
    }

    fn table_with(routes: Vec<Route>) -> RouteTable {
        let mut b = RouteTableBuilder::new();
        for r in routes {
            b.add(exact("h"), r).unwrap();
        }
        b.build()
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn trie_nodes_stay_two_to_a_cache_line() {
        assert_eq!(std::mem::size_of::<Node>(), 32);
    }

    #[test]
    fn a_longer_prefix_whose_header_match_fails_falls_through_to_a_shorter_prefix() {
        let t = table_with(vec![
            conditional(P("/").path(), "root", None),
            conditional(
                P("/api").path(),
                "api-v2",
                Some(when(None, &[("version", "two")], &[])),
            ),
            conditional(
                P("/api/v1").path(),
                "v1-beta",
                Some(when(None, &[("beta", "yes")], &[])),
            ),
        ]);
        let get = Method::GET;
        assert_eq!(
            served(&t, get.clone(), "/api/v1/x", &[("beta", "yes")], None),
            Some("v1-beta")
        );
        assert_eq!(
            served(&t, get.clone(), "/api/v1/x", &[("version", "two")], None),
            Some("api-v2")
        );
        assert_eq!(served(&t, get.clone(), "/api/v1/x", &[], None), Some("root"));
        assert_eq!(
            served(&t, get, "/other", &[("version", "two")], None),
            Some("root")
        );
    }

    #[test]
    fn without_an_accepting_route_the_request_goes_to_the_default_route() {
        let mut b = RouteTableBuilder::new();
        b.add(
            exact("h"),
            conditional(P("/").path(), "post", Some(when(Some(Method::POST), &[], &[]))),
        )
        .unwrap();
        b.set_default(route(P("/").path(), "default")).unwrap();
        let t = b.build();
        assert_eq!(served(&t, Method::POST, "/x", &[], None), Some("post"));
        assert_eq!(served(&t, Method::GET, "/x", &[], None), Some("default"));
    }

    #[test]
    fn a_method_match_beats_header_matches_on_the_same_path() {
        // Added headers-first: precedence, not order, decides.
        let t = table_with(vec![
            conditional(
                P("/").path(),
                "headers",
                Some(when(None, &[("a", "1"), ("b", "1")], &[])),
            ),
            conditional(P("/").path(), "method", Some(when(Some(Method::GET), &[], &[]))),
        ]);
        let both = [("a", "1"), ("b", "1")];
        assert_eq!(served(&t, Method::GET, "/", &both, None), Some("method"));
        assert_eq!(served(&t, Method::POST, "/", &both, None), Some("headers"));
    }

    #[test]
    fn more_header_matches_beat_fewer_and_headers_beat_query_parameters() {
        let t = table_with(vec![
            conditional(
                P("/").path(),
                "query",
                Some(when(None, &[], &[("q", "1"), ("r", "1")])),
            ),
            conditional(P("/").path(), "one", Some(when(None, &[("a", "1")], &[]))),
            conditional(
                P("/").path(),
                "two",
                Some(when(None, &[("a", "1"), ("b", "1")], &[])),
            ),
            conditional(P("/").path(), "plain", None),
        ]);
        let get = || Method::GET;
        assert_eq!(
            served(&t, get(), "/", &[("a", "1"), ("b", "1")], Some("q=1&r=1")),
            Some("two")
        );
        assert_eq!(
            served(&t, get(), "/", &[("a", "1")], Some("q=1&r=1")),
            Some("one")
        );
        assert_eq!(served(&t, get(), "/", &[], Some("q=1&r=1")), Some("query"));
        assert_eq!(served(&t, get(), "/", &[], Some("q=1")), Some("plain"));
    }

    #[test]
    fn routes_of_equal_rank_are_tried_in_the_order_they_were_added() {
        let t = table_with(vec![
            conditional(P("/").path(), "older", Some(when(None, &[("a", "1")], &[]))),
            conditional(P("/").path(), "newer", Some(when(None, &[("b", "1")], &[]))),
        ]);
        assert_eq!(
            served(&t, Method::GET, "/", &[("a", "1"), ("b", "1")], None),
            Some("older")
        );
        assert_eq!(served(&t, Method::GET, "/", &[("b", "1")], None), Some("newer"));
        let names: Vec<_> = t.iter().map(|(_, r)| &*r.source.name).collect();
        assert_eq!(names, ["older", "newer"]);
    }

    #[test]
    fn an_exact_path_beats_a_prefix_whatever_their_conditions() {
        let t = table_with(vec![
            conditional(
                P("/x").path(),
                "prefix",
                Some(when(Some(Method::GET), &[("a", "1")], &[])),
            ),
            conditional(E("/x").path(), "exact", None),
        ]);
        assert_eq!(served(&t, Method::GET, "/x", &[("a", "1")], None), Some("exact"));
        assert_eq!(
            served(&t, Method::GET, "/x/y", &[("a", "1")], None),
            Some("prefix")
        );
        // An Exact route that refuses the request gives way to the Prefix one.
        let t = table_with(vec![
            conditional(P("/x").path(), "prefix", None),
            conditional(E("/x").path(), "exact", Some(when(Some(Method::POST), &[], &[]))),
        ]);
        assert_eq!(served(&t, Method::GET, "/x", &[], None), Some("prefix"));
        assert_eq!(served(&t, Method::POST, "/x", &[], None), Some("exact"));
    }

    #[test]
    fn equal_conditions_on_the_same_host_and_path_conflict() {
        let mut b = RouteTableBuilder::new();
        let c = || Some(when(Some(Method::GET), &[("a", "1")], &[]));
        b.add(exact("h"), conditional(P("/x").path(), "older", c()))
            .unwrap();
        b.add(exact("h"), conditional(P("/x").path(), "other", None))
            .unwrap();
        let got = b.add(exact("h"), conditional(P("/x/").path(), "newer", c()));
        assert_eq!(
            got,
            Err(RouteError::Conflict {
                host: "h".into(),
                path: P("/x/").path(),
                existing: source("older"),
            })
        );
        let got = b.add(exact("h"), conditional(P("/x").path(), "newer", None));
        assert!(matches!(got, Err(RouteError::Conflict { existing, .. }) if &*existing.name == "other"));
        let t = b.build();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn regex_paths_with_conditions_fall_through_to_the_next_regex() {
        let t = table_with(vec![
            conditional(
                PathMatch::Regex("/a/.*".into()),
                "long",
                Some(when(Some(Method::PUT), &[], &[])),
            ),
            conditional(PathMatch::Regex("/a".into()), "short", None),
        ]);
        assert_eq!(served(&t, Method::PUT, "/a/b", &[], None), Some("long"));
        assert_eq!(served(&t, Method::GET, "/a/b", &[], None), Some("short"));
    }

    #[test]
    fn explain_says_which_conditions_a_route_refused() {
        let t = table_with(vec![
            conditional(P("/").path(), "plain", None),
            conditional(P("/").path(), "v2", Some(when(None, &[("version", "two")], &[]))),
        ]);
        let headers = HeaderMap::new();
        let e = t.explain("h", "/x", &RequestFacts::get(&headers));
        assert_eq!(&*e.chosen.unwrap().source.name, "plain");
        let why = &e.not_chosen[0].why;
        assert!(why.contains("header version=two"), "{why}");
    }

    #[test]
    fn a_listener_condition_alone_conflicts_with_a_route_on_every_listener_but_not_with_the_other_listener() {
        let listener = |tls: bool| {
            Some(RequestConditions {
                tls: Some(tls),
                ..RequestConditions::default()
            })
        };
        // An Ingress route (every listener) first: a plain-HTTP-only route of the same path would
        // take its plain-HTTP requests, so it is refused.
        let mut b = RouteTableBuilder::new();
        b.add(exact("h"), conditional(P("/").path(), "ingress", None))
            .unwrap();
        let got = b.add(exact("h"), conditional(P("/").path(), "plain", listener(false)));
        assert!(matches!(got, Err(RouteError::Conflict { existing, .. }) if &*existing.name == "ingress"));
        // The same match on the two listeners: two claims, each served on its own.
        let mut b = RouteTableBuilder::new();
        b.add(exact("h"), conditional(P("/").path(), "plain", listener(false)))
            .unwrap();
        b.add(exact("h"), conditional(P("/").path(), "tls", listener(true)))
            .unwrap();
        let got = b.add(exact("h"), conditional(P("/").path(), "everywhere", None));
        assert!(matches!(got, Err(RouteError::Conflict { .. })), "{got:?}");
        let t = b.build();
        let headers = HeaderMap::new();
        let mut facts = RequestFacts::get(&headers);
        assert_eq!(&*t.lookup_request("h", "/", &facts).unwrap().source.name, "plain");
        facts.tls = true;
        assert_eq!(&*t.lookup_request("h", "/", &facts).unwrap().source.name, "tls");
    }

    #[test]
    fn a_lone_route_with_conditions_is_judged_in_its_slot() {
        // One route per slot, each with conditions: the slot holds the route itself (no list),
        // and a request that fails its conditions falls through as if it were in a list.
        let tls_only = Some(RequestConditions {
            tls: Some(true),
            ..RequestConditions::default()
        });
        let t = table_with(vec![
            conditional(P("/").path(), "root", None),
            conditional(P("/a").path(), "a-tls", tls_only.clone()),
            conditional(
                E("/a/b").path(),
                "ab-put",
                Some(when(Some(Method::PUT), &[], &[])),
            ),
        ]);
        assert!(t
            .host_table(&HostMatch::Exact("h".into()))
            .is_some_and(|table| table.trie.lists.is_empty()));
        assert_eq!(served(&t, Method::GET, "/a/x", &[], None), Some("root"));
        assert_eq!(served(&t, Method::PUT, "/a/b", &[], None), Some("ab-put"));
        assert_eq!(served(&t, Method::GET, "/a/b", &[], None), Some("root"));
        let headers = HeaderMap::new();
        let mut facts = RequestFacts::get(&headers);
        facts.tls = true;
        assert_eq!(
            &*t.lookup_request("h", "/a/x", &facts).unwrap().source.name,
            "a-tls"
        );
        assert_eq!(
            &*t.lookup_request("h", "/a/b", &facts).unwrap().source.name,
            "a-tls"
        );
    }
}
