//! Cluster mode: kube-runtime watchers fill the shared store.
//!
//! One `watcher` per kind (and, with `--watch-namespace`, per namespace for the namespaced kinds)
//! feeds [`SharedStore`], exactly as the file source does: the rebuild loop downstream never knows
//! where an object came from. Each watcher:
//!
//! - applies every object it lists or sees change, slimmed first ([`slim`]): managed fields, labels
//!   and annotations that translation does not read (an Ingress keeps every
//!   `nginx.ingress.kubernetes.io/*` one), the keys of `kubernetes.io/tls` Secrets other than the
//!   certificate and key (a Secret an annotation names keeps all: [`slim_referenced`]), ConfigMaps'
//!   binary data, the bulky parts of Node status, all of a Service but its ports and cluster IP,
//!   and all of an EndpointSlice's endpoints but their addresses and readiness (pod references,
//!   nodes, zones, hints) are dropped, so the store holds what translation needs and
//!   little more (`kubectl.kubernetes.io/last-applied-configuration` alone doubles an Ingress);
//! - on a (re)list, replaces what it holds: objects of its kind and scope that the new list does not
//!   name are deleted, so objects deleted while the API server was unreachable do go away;
//! - retries failed calls with [`watcher::DefaultBackoff`] (client-go's parameters, 0.8 s doubling to
//!   30 s); a `410 Gone` on a watch restarts it with a fresh list (the watcher does that itself;
//!   `gantry_kube_relists_total` counts them, and `tests/cluster_relist.rs` forces one).
//!
//! Secrets of other types and ConfigMaps are read only where an annotation of one of our Ingresses
//! names them (`auth-secret`, `custom-headers`, ...): [`watch_references`] keeps exactly one
//! watch per referenced object, listing and watching it by name (`metadata.name=<name>`), so an
//! object created after the Ingress is seen, and Gantry never lists the cluster's other Secrets and
//! ConfigMaps. See [`ReferenceWatches`] for how a referenced Secret of type `kubernetes.io/tls`,
//! which the TLS watch also sees, is kept consistent.
//!
//! The store is marked synced once **every** watcher has finished its first list (and the watches
//! of the objects referenced then theirs, for at most [`REFERENCE_SYNC_TIMEOUT`]), so the first
//! snapshot never serves a partial view of the cluster. Until then the last snapshot (none, at start)
//! keeps serving and `/readyz` says 503. When the API server goes away, nothing here stops traffic:
//! the store simply stops changing until the watches reconnect.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
    pin::pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use crate::metrics::{KindLabels, Metrics, StoreEventLabels};
use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace, Node, NodeStatus, Secret, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointSlice},
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{oneshot, watch, Notify},
    task::JoinHandle,
};

use super::lenient::Lenient;
use crate::{
    annotations::references::references_of,
    crd::ProxyConfig,
    diagnostic::{Diagnostic, ObjectRef},
    gateway::api::{BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant},
    runtime::{SharedStore, SourceState},
    store::{Change, Kind, Object, ObjectKey, ObjectStore, SERVICE_NAME_LABEL},
    translate::{
        served_ingresses_by_key, TranslateOptions, ANNOTATION_BACKEND_MODE, ANNOTATION_DEFAULT_CLASS,
        ANNOTATION_INGRESS_CLASS, ANNOTATION_SSL_REDIRECT,
    },
};

/// The only Secrets the Secret watch lists (its field selector); others are read only when an
/// annotation refers to them.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Most referenced Secrets and ConfigMaps watched at once, one watch (and, as kube's client speaks
/// HTTP/1.1, one connection to the API server) each. References beyond it are not watched: their
/// Ingresses fail closed and a diagnostic says why.
pub const MAX_REFERENCE_WATCHES: usize = 10_000;

/// How long the initial sync waits for the first lists of the objects referenced then. A watch that
/// cannot list (the API server refuses, e.g. RBAC without ConfigMaps) leaves its Ingresses failing
/// closed rather than Gantry never ready; it keeps retrying.
pub const REFERENCE_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The reason of the diagnostic about a reference that is not watched.
pub const REFERENCE_NOT_WATCHED: &str = "ReferenceNotWatched";

/// The annotations translation reads; every other annotation is dropped before storing.
const KEPT_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_INGRESS_CLASS,
    ANNOTATION_DEFAULT_CLASS,
    ANNOTATION_BACKEND_MODE,
    ANNOTATION_SSL_REDIRECT,
];

/// The keys of `kubernetes.io/tls` Secrets that translation reads. (A Secret an annotation refers to
/// keeps all of its keys: [`slim_referenced`].)
const KEPT_SECRET_KEYS: [&str; 2] = ["tls.crt", "tls.key"];

/// Most watch events applied to the store under one lock: a large list arrives in pages of 500
/// objects, and taking the lock once per page instead of once per object keeps the rebuild loop and
/// the writers from waiting behind it.
const BATCH: usize = 512;

/// Why cluster mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--kubeconfig` names a file that cannot be read or parsed.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account gave a usable configuration.
    #[error("no Kubernetes configuration (give --kubeconfig, set KUBECONFIG, or run in a cluster): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The configuration was found but a client cannot be built from it (TLS material, proxy).
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Namespaces to watch the namespaced kinds in; empty means every namespace.
    pub namespaces: Vec<String>,
    /// Watch Nodes too (only node-port backend mode needs them).
    pub nodes: bool,
    /// Watch `gantry.dev` ProxyConfigs too, when the CRD is installed (see [`watch_proxy_configs`]).
    pub proxy_configs: bool,
    /// Watch the Gateway API kinds (those whose CRDs are installed) and Namespaces (for the
    /// listeners' route namespace selectors).
    pub gateway_api: bool,
    /// Watch the Secrets and ConfigMaps that the annotations of our Ingresses (chosen by these
    /// options' class) refer to ([`watch_references`]); `None`: none are read.
    pub references: Option<Arc<TranslateOptions>>,
}

/// Builds a client from `--kubeconfig`, else from `KUBECONFIG` / `~/.kube/config`, else from the
/// in-cluster service account.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    Client::try_from(config).map_err(Error::Client)
}

/// What every watcher shares.
struct Ctx {
    shared: Arc<SharedStore>,
    metrics: Metrics,
    /// Watchers that have not finished their first list yet.
    unsynced: AtomicUsize,
    /// Told each time a watcher finishes its first list.
    listed: Notify,
    /// Told when Ingresses or IngressClasses changed: the referenced objects may have.
    ingresses_changed: Notify,
    /// The Secrets that reference watches hold; locked inside the store's lock, never the other
    /// way round.
    referenced_secrets: Mutex<ReferencedSecrets>,
}

/// The Secrets that [`watch_references`] watches by name, which the TLS watch must leave alone.
#[derive(Debug, Default)]
struct ReferencedSecrets {
    /// Keys with a running reference watch: that watch alone writes them in the store.
    watched: HashSet<ObjectKey>,
    /// The TLS watch's own view of those keys (a `kubernetes.io/tls` Secret it lists), put back in
    /// the store when the reference goes away.
    tls_view: HashMap<ObjectKey, Secret>,
}

// === impl Ctx ===

impl Ctx {
    /// One more watcher (of those the initial sync waits for) has listed; the last one marks the
    /// store synced.
    fn first_list_done(&self) {
        let left = self.unsynced.fetch_sub(1, Ordering::SeqCst) - 1;
        self.listed.notify_waiters();
        if left == 0 {
            tracing::info!(
                objects = self.shared.with_state(|s| s.store.len()),
                "initial list complete"
            );
            self.shared.mark_synced();
        }
    }

    fn referenced_secrets(&self) -> std::sync::MutexGuard<'_, ReferencedSecrets> {
        self.referenced_secrets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the watchers; they run until `shutdown` turns true. The store is marked synced once all
/// of them have listed once.
pub fn run(
    client: Client,
    settings: Settings,
    shared: Arc<SharedStore>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // `None` is every namespace.
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        let mut namespaces = settings.namespaces.clone();
        namespaces.sort();
        namespaces.dedup();
        namespaces.into_iter().map(Some).collect()
    };
    let ctx = Arc::new(Ctx {
        shared,
        metrics,
        unsynced: AtomicUsize::new(0),
        listed: Notify::new(),
        ingresses_changed: Notify::new(),
        referenced_secrets: Mutex::default(),
    });
    let mut watches = Watches {
        ctx: ctx.clone(),
        shutdown,
        futures: Vec::new(),
    };
    for ns in &scopes {
        let tls_only = watcher::Config::default().fields(&format!("type={TLS_SECRET_TYPE}"));
        watches.add(
            namespaced::<Ingress>(&client, ns),
            ns,
            watcher::Config::default(),
            Kind::Ingress,
        );
        watches.add(
            namespaced::<Service>(&client, ns),
            ns,
            watcher::Config::default(),
            Kind::Service,
        );
        watches.add(
            namespaced::<EndpointSlice>(&client, ns),
            ns,
            watcher::Config::default(),
            Kind::EndpointSlice,
        );
        watches.futures.push(Box::pin(watch_kind(
            namespaced::<Secret>(&client, ns),
            tls_only,
            Scope {
                tls_secrets: true,
                ..Scope::new(Kind::Secret, ns.clone())
            },
            ctx.clone(),
            watches.shutdown.clone(),
            watches.first_list(),
        )));
    }
    let cluster = None;
    watches.add(
        Api::<IngressClass>::all(client.clone()),
        &cluster,
        watcher::Config::default(),
        Kind::IngressClass,
    );
    if settings.nodes {
        watches.add(
            Api::<Node>::all(client.clone()),
            &cluster,
            watcher::Config::default(),
            Kind::Node,
        );
    }
    if settings.proxy_configs {
        let first_list = watches.first_list();
        watches.futures.push(Box::pin(watch_proxy_configs(
            client.clone(),
            ctx.clone(),
            watches.shutdown.clone(),
            first_list,
        )));
    }
    if settings.gateway_api {
        for ns in &scopes {
            watches.add_if_served(namespaced::<Lenient<Gateway>>(&client, ns), ns, Kind::Gateway);
            watches.add_if_served(namespaced::<Lenient<HttpRoute>>(&client, ns), ns, Kind::HttpRoute);
            watches.add_if_served(namespaced::<Lenient<GrpcRoute>>(&client, ns), ns, Kind::GrpcRoute);
            watches.add_if_served(
                namespaced::<Lenient<ReferenceGrant>>(&client, ns),
                ns,
                Kind::ReferenceGrant,
            );
            watches.add_if_served(
                namespaced::<Lenient<BackendTlsPolicy>>(&client, ns),
                ns,
                Kind::BackendTlsPolicy,
            );
        }
        watches.add_if_served(
            Api::<Lenient<GatewayClass>>::all(client.clone()),
            &cluster,
            Kind::GatewayClass,
        );
        watches.add(
            Api::<Namespace>::all(client.clone()),
            &cluster,
            watcher::Config::default(),
            Kind::Namespace,
        );
    }
    let references = settings.references.is_some();
    if let Some(opts) = settings.references {
        let first_list = watches.first_list();
        let w = ReferenceWatches::new(
            client.clone(),
            ctx.clone(),
            opts,
            settings.namespaces.clone(),
            watches.shutdown.clone(),
        );
        watches.futures.push(Box::pin(watch_references(w, first_list)));
    }
    tracing::info!(
        watches = watches.futures.len(),
        namespaces = ?settings.namespaces,
        nodes = settings.nodes,
        proxy_configs = settings.proxy_configs,
        references,
        "watching the cluster"
    );
    let all = futures_util::future::join_all(watches.futures);
    tokio::spawn(async move {
        all.await;
    })
}

fn namespaced<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watchers being set up.
struct Watches {
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
    futures: Vec<futures_util::future::BoxFuture<'static, ()>>,
}

impl Watches {
    fn add<K>(&mut self, api: Api<K>, namespace: &Option<String>, config: watcher::Config, kind: Kind)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        K: IntoObject,
    {
        let first_list = self.first_list();
        self.futures.push(Box::pin(watch_kind(
            api,
            config,
            Scope::new(kind, namespace.clone()),
            self.ctx.clone(),
            self.shutdown.clone(),
            first_list,
        )));
    }

    /// [`Watches::add`] for a kind whose CRD may not be installed (the Gateway API): without it the
    /// watcher counts as synced with nothing listed; installing the CRDs later takes a restart.
    fn add_if_served<K>(&mut self, api: Api<K>, namespace: &Option<String>, kind: Kind)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        K: IntoObject,
    {
        let first_list = self.first_list();
        let scope = Scope::new(kind, namespace.clone());
        let (ctx, mut shutdown) = (self.ctx.clone(), self.shutdown.clone());
        self.futures.push(Box::pin(async move {
            let mut backoff = Duration::from_millis(800);
            loop {
                match api.list_metadata(&kube::api::ListParams::default().limit(1)).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        tracing::info!(kind = %kind, "not served by the API server (CRD not installed); not watched");
                        ctx.first_list_done();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(kind = %kind, error = %e, "checking whether the kind is served failed; retrying");
                        tokio::select! {
                            _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            watch_kind(api, watcher::Config::default(), scope, ctx, shutdown, first_list).await;
        }));
    }

    /// Counts one more watcher that the initial sync waits for.
    fn first_list(&self) -> FirstList {
        self.ctx.unsynced.fetch_add(1, Ordering::SeqCst);
        FirstList::Sync
    }
}

/// Whom a watcher tells when its first list is complete.
enum FirstList {
    /// The initial sync (it is one of [`Ctx::unsynced`]).
    Sync,
    /// [`watch_references`], which started it.
    Signal(oneshot::Sender<()>),
}

/// The objects one watcher is responsible for: one kind, in one namespace or all of them, or one
/// object.
#[derive(Clone, Debug)]
struct Scope {
    kind: Kind,
    /// `None`: every namespace (or a cluster-scoped kind).
    namespace: Option<String>,
    /// One object by name (a referenced Secret or ConfigMap); `None`: all of the kind.
    name: Option<String>,
    /// The `kubernetes.io/tls` Secret watch, which leaves the keys reference watches hold to them
    /// ([`ReferencedSecrets`]).
    tls_secrets: bool,
}

impl Scope {
    fn new(kind: Kind, namespace: Option<String>) -> Self {
        Self {
            kind,
            namespace,
            name: None,
            tls_secrets: false,
        }
    }

    fn contains(&self, key: &ObjectKey) -> bool {
        self.namespace.as_ref().is_none_or(|ns| &key.namespace == ns)
            && self.name.as_ref().is_none_or(|name| &key.name == name)
    }
}

/// One step of a watcher, converted (and slimmed) before the store lock is taken.
enum Step {
    /// A (re)list starts.
    Init,
    /// An object of a (re)list.
    Listed(Object),
    /// The (re)list is complete: what it did not name is gone.
    InitDone,
    /// An object was added or changed.
    Applied(Object),
    /// An object was deleted.
    Deleted(ObjectKey),
    /// An object that cannot be decoded (see [`Lenient`]), from a (re)list or a change.
    Invalid { bad: InvalidObject, listed: bool },
}

/// An object the watcher could not decode: its key and why.
pub struct InvalidObject {
    key: ObjectKey,
    uid: Option<String>,
    error: String,
}

/// What a watcher stores for one item it received.
pub trait IntoObject {
    fn into_object(self) -> Result<Object, InvalidObject>;
}

impl<K> IntoObject for K
where
    Object: From<K>,
{
    fn into_object(self) -> Result<Object, InvalidObject> {
        Ok(Object::from(self))
    }
}

impl<K> IntoObject for Lenient<K>
where
    Object: From<K>,
{
    fn into_object(self) -> Result<Object, InvalidObject> {
        match self {
            Lenient::Valid(k) => Ok(Object::from(k)),
            Lenient::Invalid { metadata, error } => Err(InvalidObject {
                key: ObjectKey::of(&metadata),
                uid: metadata.uid,
                error,
            }),
        }
    }
}

/// Drops the `InvalidObject` diagnostic of an object (it was fixed, or deleted). A dropped one is a
/// [`Change::Read`]: diagnostics are published with the build.
fn forget_invalid(diagnostics: &mut Vec<Diagnostic>, kind: Kind, key: &ObjectKey) -> Change {
    if diagnostics
        .iter()
        .any(|d| d.reason == crate::manifests::INVALID_OBJECT)
    {
        let before = diagnostics.len();
        // Whatever its uid: a fixed object is the same one, and a deleted one is gone.
        diagnostics.retain(|d| d.reason != crate::manifests::INVALID_OBJECT || !d.object.is(kind, key));
        if diagnostics.len() != before {
            return Change::Read;
        }
    }
    Change::Unchanged
}

/// Counts one watch event in `gantry_store_events_total` and returns its change.
fn counted(metrics: &Metrics, kind: Kind, change: Change) -> Change {
    let result = if change.is_read() { "changed" } else { "ignored" };
    metrics
        .store_events
        .get_or_create(&StoreEventLabels {
            kind: kind.as_str(),
            result,
        })
        .inc();
    change
}

/// Runs one watcher until shutdown.
async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    scope: Scope,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    first_list: FirstList,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    K: IntoObject,
{
    let kind = scope.kind;
    // Objects watched by name are kept whole; the rest is slimmed to what translation reads.
    let slim_one = if scope.name.is_some() {
        slim_referenced
    } else {
        slim
    };
    let stream = watcher(api, config).default_backoff().ready_chunks(BATCH);
    let mut stream = pin!(stream);
    // Keys named by the (re)list in progress; `None` outside a list.
    let mut listed: Option<HashSet<ObjectKey>> = None;
    let mut first_list = Some(first_list);
    // Whether a list has completed: an `Init` after that is a relist (kube-runtime's watcher lists
    // again after a `410 Gone`), counted in `gantry_kube_relists_total`. A first list that failed
    // half-way and starts over is not one.
    let mut listed_once = false;
    loop {
        let batch = tokio::select! {
            _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
            batch = stream.next() => match batch {
                Some(b) => b,
                None => return,
            },
        };
        let mut steps = Vec::with_capacity(batch.len());
        for event in batch {
            match event {
                Ok(watcher::Event::Init) => {
                    if listed_once {
                        ctx.metrics
                            .kube_relists
                            .get_or_create(&KindLabels { kind: kind.as_str() })
                            .inc();
                        tracing::info!(kind = %kind, namespace = ?scope.namespace, name = ?scope.name, "relist: the watch lists again");
                    }
                    steps.push(Step::Init)
                }
                Ok(watcher::Event::InitApply(o)) => steps.push(match o.into_object() {
                    Ok(obj) => Step::Listed(slim_one(obj)),
                    Err(bad) => Step::Invalid { bad, listed: true },
                }),
                Ok(watcher::Event::InitDone) => {
                    listed_once = true;
                    steps.push(Step::InitDone)
                }
                Ok(watcher::Event::Apply(o)) => steps.push(match o.into_object() {
                    Ok(obj) => Step::Applied(slim_one(obj)),
                    Err(bad) => Step::Invalid { bad, listed: false },
                }),
                Ok(watcher::Event::Delete(o)) => steps.push(Step::Deleted(match o.into_object() {
                    Ok(obj) => obj.key(),
                    Err(bad) => bad.key,
                })),
                Err(e) => {
                    ctx.metrics
                        .kube_watch_errors
                        .get_or_create(&KindLabels { kind: kind.as_str() })
                        .inc();
                    tracing::warn!(kind = %kind, namespace = ?scope.namespace, name = ?scope.name, error = %e, "watch failed; retrying with backoff");
                }
            }
        }
        if steps.is_empty() {
            continue;
        }
        let mut first_sync = false;
        let change = ctx.shared.update(|s| {
            let mut change = Change::Unchanged;
            // The TLS watch writes a key that a reference watch holds into its own view only.
            let mut referenced = scope.tls_secrets.then(|| ctx.referenced_secrets());
            let mut target = Target {
                store: &mut s.store,
                referenced: referenced.as_deref_mut(),
            };
            for step in steps {
                match step {
                    Step::Init => listed = Some(HashSet::new()),
                    Step::Listed(obj) => {
                        listed.get_or_insert_with(HashSet::new).insert(obj.key());
                        let fixed = forget_invalid(&mut s.diagnostics, kind, &obj.key());
                        let applied = target.apply(obj);
                        change = change.max(counted(&ctx.metrics, kind, applied.max(fixed)));
                    }
                    Step::InitDone => {
                        let listed = listed.take().unwrap_or_default();
                        let stale = target.stale(&scope, &listed);
                        if stale > 0 {
                            change = Change::Read;
                            tracing::info!(kind = %kind, namespace = ?scope.namespace, name = ?scope.name, removed = stale, "relist: removing objects deleted meanwhile");
                        }
                        tracing::debug!(kind = %kind, namespace = ?scope.namespace, name = ?scope.name, objects = listed.len(), "listed");
                        first_sync |= first_list.is_some();
                    }
                    Step::Applied(obj) => {
                        let fixed = forget_invalid(&mut s.diagnostics, kind, &obj.key());
                        let applied = target.apply(obj);
                        change = change.max(counted(&ctx.metrics, kind, applied.max(fixed)));
                    }
                    Step::Deleted(key) => {
                        let fixed = forget_invalid(&mut s.diagnostics, kind, &key);
                        let deleted = target.delete(kind, &key);
                        change = change.max(counted(&ctx.metrics, kind, deleted.max(fixed)));
                    }
                    Step::Invalid { bad, listed: in_list } => {
                        if in_list {
                            listed.get_or_insert_with(HashSet::new).insert(bad.key.clone());
                        }
                        tracing::warn!(kind = %kind, object = %bad.key, error = %bad.error, "object cannot be read; it is not served");
                        forget_invalid(&mut s.diagnostics, kind, &bad.key);
                        s.diagnostics.push(Diagnostic {
                            object: ObjectRef::new(kind, &bad.key, bad.uid.as_deref()),
                            reason: crate::manifests::INVALID_OBJECT.into(),
                            message: format!(
                                "{kind} {} cannot be read by Gantry ({}); it is not served until it is fixed",
                                bad.key, bad.error
                            ),
                        });
                        target.delete(kind, &bad.key);
                        // The new diagnostic is published with the next build.
                        change = change.max(counted(&ctx.metrics, kind, Change::Read));
                    }
                }
            }
            change
        });
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        ctx.metrics.kube_last_sync.set(now.as_secs_f64());
        // Only a change to what translation reads can change which objects are referenced (and by
        // which of our Ingresses): a status write, Gantry's own above all, must not make the
        // reference watches go over every Ingress again (10,000 status writes did that 10,000
        // times).
        if change == Change::Read
            && matches!(kind, Kind::Ingress | Kind::IngressClass | Kind::BackendTlsPolicy)
        {
            ctx.ingresses_changed.notify_one();
        }
        if first_sync {
            match first_list.take() {
                Some(FirstList::Sync) => ctx.first_list_done(),
                Some(FirstList::Signal(tx)) => {
                    let _ = tx.send(());
                }
                None => {}
            }
        }
    }
}

/// Where one watcher's changes go: the store, except that the TLS watch ([`Scope::tls_secrets`])
/// keeps the keys a reference watch holds in [`ReferencedSecrets::tls_view`] instead.
struct Target<'a> {
    store: &'a mut ObjectStore,
    /// Only for the TLS watch.
    referenced: Option<&'a mut ReferencedSecrets>,
}

impl Target<'_> {
    /// What the store made of it; a key kept aside in the TLS view changes nothing translation
    /// reads.
    fn apply(&mut self, obj: Object) -> Change {
        if let Some(r) = &mut self.referenced {
            let key = obj.key();
            if r.watched.contains(&key) {
                if let Object::Secret(secret) = obj {
                    r.tls_view.insert(key, secret);
                }
                return Change::Unchanged;
            }
        }
        self.store.apply(obj)
    }

    fn delete(&mut self, kind: Kind, key: &ObjectKey) -> Change {
        match &mut self.referenced {
            Some(r) if r.watched.contains(key) => {
                r.tls_view.remove(key);
                Change::Unchanged
            }
            _ => self.store.delete(kind, key),
        }
    }

    /// After a complete list: deletes what `scope` holds that the list did not name. Returns how
    /// many were deleted.
    fn stale(&mut self, scope: &Scope, listed: &HashSet<ObjectKey>) -> usize {
        let mut stale = stale_keys(self.store, scope, listed);
        if let Some(r) = &mut self.referenced {
            stale.retain(|k| !r.watched.contains(k));
            r.tls_view.retain(|k, _| !scope.contains(k) || listed.contains(k));
        }
        for key in &stale {
            self.store.delete(scope.kind, key);
        }
        stale.len()
    }
}

/// Watches ProxyConfigs like any other kind once the CRD is known to be served. Without the CRD
/// (a cluster where only the controller was installed, not the chart's CRDs) this watcher counts as
/// synced with nothing listed, so the controller still starts, and IngressClass parameters that
/// name a ProxyConfig report it missing; installing the CRD later takes a restart. Other errors
/// (API server unreachable) are retried, so a slow API server never costs the ProxyConfig.
async fn watch_proxy_configs(
    client: Client,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    first_list: FirstList,
) {
    let api = Api::<ProxyConfig>::all(client);
    let mut backoff = std::time::Duration::from_millis(800);
    loop {
        match api
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::warn!(
                    "the ProxyConfig CRD (proxyconfigs.gantry.dev) is not installed; IngressClass parameters \
                     cannot apply until it is installed and gantry restarted"
                );
                ctx.first_list_done();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "checking for the ProxyConfig CRD failed; retrying");
                tokio::select! {
                    _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
    let scope = Scope::new(Kind::ProxyConfig, None);
    watch_kind(api, watcher::Config::default(), scope, ctx, shutdown, first_list).await;
}

/// The watches of the Secrets and ConfigMaps that the annotations of our Ingresses refer to.
///
/// After every change to Ingresses or IngressClasses, the referenced objects of the Ingresses that
/// are ours ([`served_ingresses`](crate::translate::served_ingresses): the same class selection translation makes) are listed with
/// [`references_of`], and exactly one watch runs per object: new references get a watch, and the
/// watch of a reference that went away is stopped and its object removed from the store.
///
/// A Secret of type `kubernetes.io/tls` is seen by the TLS watch too. So that the two never undo
/// each other (a late delete from one removing what the other just stored, a slimmed copy
/// replacing a whole one), a reference watch **owns** its key while it runs
/// ([`ReferencedSecrets`]): only it writes that key in the store, while the TLS watch keeps its
/// own view of the key aside, which is put back in the store when the reference goes away.
///
/// A reference outside `--watch-namespace`, or beyond [`MAX_REFERENCE_WATCHES`], is not watched:
/// the Ingress fails closed (the object is "not found"), and a diagnostic
/// ([`REFERENCE_NOT_WATCHED`]) says why.
struct ReferenceWatches {
    client: Client,
    ctx: Arc<Ctx>,
    opts: Arc<TranslateOptions>,
    /// Sorted; empty: every namespace.
    namespaces: Vec<String>,
    running: BTreeMap<Reference, JoinHandle<()>>,
    /// The references of each of our Ingresses at a store revision, so an Ingress that did not
    /// change (or whose status alone did) is not parsed again.
    /// foldhash: looked up for every Ingress of ours after every Ingress change.
    by_ingress: HashMap<ObjectKey, Refs, foldhash::fast::RandomState>,
    /// Counts [`Self::wanted`] passes: an entry of `by_ingress` not stamped with the current one
    /// belongs to an Ingress that is gone or no longer ours.
    pass: u64,
    /// The diagnostics last put in the store.
    diagnostics: Vec<Diagnostic>,
    shutdown: watch::Receiver<bool>,
}

/// A referenced object: its kind (Secret or ConfigMap) and key.
type Reference = (Kind, ObjectKey);

/// The references one Ingress's annotations make, at the Ingress's store revision.
struct Refs {
    revision: Option<u64>,
    refs: Vec<Reference>,
    /// The last [`ReferenceWatches::wanted`] pass that saw the Ingress among ours.
    pass: u64,
}

/// What one pass of [`ReferenceWatches::reconcile`] found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Running watches no Ingress needs any more.
    stop: Vec<Reference>,
    /// References to start watching.
    start: Vec<Reference>,
    /// References not watched, why, and the Ingresses that make them.
    unwatched: Vec<(Reference, Unwatched, Vec<ObjectRef>)>,
}

/// Why a reference is not watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unwatched {
    /// Its namespace is not one of `--watch-namespace`.
    OutsideNamespaces,
    /// [`MAX_REFERENCE_WATCHES`] run already.
    Limit,
}

impl ReferenceWatches {
    fn new(
        client: Client,
        ctx: Arc<Ctx>,
        opts: Arc<TranslateOptions>,
        mut namespaces: Vec<String>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        namespaces.sort();
        namespaces.dedup();
        Self {
            client,
            ctx,
            opts,
            namespaces,
            running: BTreeMap::new(),
            by_ingress: HashMap::default(),
            pass: 0,
            diagnostics: Vec::new(),
            shutdown,
        }
    }

    /// The references of our Ingresses now, each with the Ingresses that make it.
    ///
    /// Runs after every change translation reads, under the store's lock, which the rebuild waits
    /// for: per Ingress it is a revision lookup, and only a changed Ingress is parsed again. (The
    /// set of our Ingresses is taken by key: the order translation gives them does not matter
    /// here, and sorting ten thousand of them was most of this pass.)
    fn wanted(&mut self) -> BTreeMap<Reference, Vec<ObjectRef>> {
        let mut wanted: BTreeMap<Reference, Vec<ObjectRef>> = BTreeMap::new();
        self.pass += 1;
        let pass = self.pass;
        let by_ingress = &mut self.by_ingress;
        self.ctx.shared.with_state(|s| {
            for (key, ingress, revision) in served_ingresses_by_key(&s.store, &self.opts) {
                let refs = match by_ingress.get_mut(key) {
                    Some(seen) if seen.revision == revision => {
                        seen.pass = pass;
                        &seen.refs
                    }
                    _ => {
                        let refs = references_of(key, ingress.metadata.annotations.as_ref());
                        // Only a new or changed Ingress gets here: parsed, and its entry (re)placed.
                        let seen = by_ingress
                            .entry(key.clone())
                            .insert_entry(Refs { revision, refs, pass });
                        &seen.into_mut().refs
                    }
                };
                for r in refs {
                    wanted.entry(r.clone()).or_default().push(ObjectRef::of(
                        Kind::Ingress,
                        key,
                        &ingress.metadata,
                    ));
                }
            }
            // The CA ConfigMaps of BackendTLSPolicies.
            if self.opts.gateway.is_some() {
                for (key, policy) in s.store.backend_tls_policies() {
                    for r in policy.spec.validation.ca_certificate_refs.iter().flatten() {
                        if r.group.is_empty() && r.kind == "ConfigMap" {
                            wanted
                                .entry((
                                    Kind::ConfigMap,
                                    ObjectKey::new(key.namespace.as_str(), r.name.as_str()),
                                ))
                                .or_default()
                                .push(ObjectRef::of(Kind::BackendTlsPolicy, key, &policy.metadata));
                        }
                    }
                }
            }
        });
        by_ingress.retain(|_, seen| seen.pass == pass);
        wanted
    }

    /// Brings the running watches in line with our Ingresses' references. Returns the receivers of
    /// the first lists of the watches started.
    async fn reconcile(&mut self) -> Vec<oneshot::Receiver<()>> {
        let wanted = self.wanted();
        let plan = plan(&self.running, &self.namespaces, wanted, MAX_REFERENCE_WATCHES);
        // Stop first: the stopped watches may no longer write when their objects are removed.
        let mut stopping: Vec<(Reference, JoinHandle<()>)> = plan
            .stop
            .iter()
            .filter_map(|r| self.running.remove_entry(r))
            .collect();
        for (_, task) in &stopping {
            task.abort();
        }
        for (_, task) in &mut stopping {
            let _ = task.await;
        }
        if !stopping.is_empty() {
            self.ctx.shared.update(|s| {
                let mut referenced = self.ctx.referenced_secrets();
                let mut change = Change::Unchanged;
                for ((kind, key), _) in &stopping {
                    change = change.max(s.store.delete(*kind, key));
                    if *kind == Kind::Secret {
                        referenced.watched.remove(key);
                        if let Some(tls) = referenced.tls_view.remove(key) {
                            change = change.max(s.store.apply(Object::Secret(tls)));
                        }
                    }
                }
                change
            });
            tracing::info!(
                stopped = stopping.len(),
                "stopped watching objects no Ingress refers to any more"
            );
        }
        let mut first_lists = Vec::with_capacity(plan.start.len());
        for reference in &plan.start {
            let (tx, rx) = oneshot::channel();
            let task = self.start(reference, tx);
            self.running.insert(reference.clone(), task);
            first_lists.push(rx);
        }
        if !plan.start.is_empty() {
            tracing::info!(
                started = plan.start.len(),
                watches = self.running.len(),
                "watching objects that Ingresses refer to"
            );
        }
        self.ctx
            .metrics
            .kube_reference_watches
            .set(self.running.len() as i64);
        self.report(&plan.unwatched);
        first_lists
    }

    /// Starts the watch of one referenced object.
    fn start(&self, (kind, key): &Reference, first_list: oneshot::Sender<()>) -> JoinHandle<()> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
        let scope = Scope {
            name: Some(key.name.clone()),
            ..Scope::new(*kind, Some(key.namespace.clone()))
        };
        let (ctx, shutdown) = (self.ctx.clone(), self.shutdown.clone());
        let first_list = FirstList::Signal(first_list);
        match kind {
            Kind::Secret => {
                // From now on this watch alone writes the key; what the TLS watch has is kept
                // aside. The store keeps it until this watch's first list replaces it.
                self.ctx.shared.with_state(|s| {
                    let mut referenced = self.ctx.referenced_secrets();
                    referenced.watched.insert(key.clone());
                    if let Some(tls) = s.store.secrets().get(key) {
                        referenced.tls_view.insert(key.clone(), (**tls).clone());
                    }
                });
                let api = Api::<Secret>::namespaced(self.client.clone(), &key.namespace);
                tokio::spawn(watch_kind(api, config, scope, ctx, shutdown, first_list))
            }
            _ => {
                let api = Api::<ConfigMap>::namespaced(self.client.clone(), &key.namespace);
                tokio::spawn(watch_kind(api, config, scope, ctx, shutdown, first_list))
            }
        }
    }

    /// Puts the diagnostics about unwatched references in the store, when they changed.
    fn report(&mut self, unwatched: &[(Reference, Unwatched, Vec<ObjectRef>)]) {
        let mut diagnostics: Vec<Diagnostic> = unwatched
            .iter()
            .flat_map(|((kind, key), why, ingresses)| {
                let message = match why {
                    Unwatched::OutsideNamespaces => format!(
                        "{kind} {key} is in a namespace Gantry does not watch (--watch-namespace {}): \
                         it is not read, and the annotation that names it fails closed",
                        self.namespaces.join(",")
                    ),
                    Unwatched::Limit => format!(
                        "{kind} {key} is not watched: the Ingresses refer to more than \
                         {MAX_REFERENCE_WATCHES} Secrets and ConfigMaps; the annotation that names it \
                         fails closed"
                    ),
                };
                ingresses.iter().map(move |owner| Diagnostic {
                    object: owner.clone(),
                    reason: REFERENCE_NOT_WATCHED.to_string(),
                    message: message.clone(),
                })
            })
            .collect();
        diagnostics.sort();
        diagnostics.dedup();
        if diagnostics == self.diagnostics {
            return;
        }
        for d in diagnostics
            .iter()
            .filter(|d| self.diagnostics.binary_search(d).is_err())
        {
            tracing::warn!(object = %d.object, reason = %d.reason, "{}", d.message);
        }
        self.ctx.shared.update(|s| {
            replace_diagnostics(s, &diagnostics);
            Change::Read
        });
        self.diagnostics = diagnostics;
    }

    /// Stops every watch (at shutdown).
    async fn stop_all(&mut self) {
        let running = std::mem::take(&mut self.running);
        for task in running.values() {
            task.abort();
        }
        for (_, task) in running {
            let _ = task.await;
        }
    }
}

/// Which watches to stop and start so that `running` matches `wanted` (each reference with the
/// Ingresses that make it), watching only in `namespaces` (sorted; empty: all) and at most `limit`
/// objects. Running watches are kept before new ones are started, so reaching the limit never
/// moves a watch from one object to another.
fn plan<T>(
    running: &BTreeMap<Reference, T>,
    namespaces: &[String],
    wanted: BTreeMap<Reference, Vec<ObjectRef>>,
    limit: usize,
) -> Plan {
    let mut plan = Plan {
        stop: running
            .keys()
            .filter(|r| !wanted.contains_key(*r))
            .cloned()
            .collect(),
        ..Plan::default()
    };
    let mut watched = running.len() - plan.stop.len();
    for (reference, ingresses) in wanted {
        if running.contains_key(&reference) {
            continue;
        }
        let (_, key) = &reference;
        if !namespaces.is_empty() && namespaces.binary_search(&key.namespace).is_err() {
            plan.unwatched
                .push((reference, Unwatched::OutsideNamespaces, ingresses));
        } else if !is_object_name(&key.name) || !is_object_name(&key.namespace) {
            // No object can have this name; it is missing, and a field selector must not
            // carry it.
            continue;
        } else if watched >= limit {
            plan.unwatched.push((reference, Unwatched::Limit, ingresses));
        } else {
            watched += 1;
            plan.start.push(reference);
        }
    }
    plan
}

/// Replaces the source diagnostics about unwatched references.
fn replace_diagnostics(s: &mut SourceState, diagnostics: &[Diagnostic]) {
    s.diagnostics.retain(|d| d.reason != REFERENCE_NOT_WATCHED);
    s.diagnostics.extend(diagnostics.iter().cloned());
}

/// Whether `name` can name an object (a DNS-1123 subdomain; namespaces are labels, a subset), so
/// that it can go into a field selector as it is.
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Keeps one watch per object that the annotations of our Ingresses refer to, until shutdown.
///
/// It starts once every other watcher has listed (so it sees every Ingress and IngressClass), and
/// the store counts as synced only after the watches of the objects referenced then have listed
/// too, or [`REFERENCE_SYNC_TIMEOUT`] passed: the first snapshot does not fail closed for an object
/// that is there.
async fn watch_references(mut w: ReferenceWatches, first_list: FirstList) {
    let mut shutdown = w.shutdown.clone();
    // Wait for the other watchers' first lists (this one is the last of `unsynced`).
    loop {
        let listed = w.ctx.listed.notified();
        let mut listed = pin!(listed);
        listed.as_mut().enable();
        if w.ctx.unsynced.load(Ordering::SeqCst) <= 1 {
            break;
        }
        tokio::select! {
            _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
            _ = listed => {}
        }
    }
    let mut first_list = Some(first_list);
    loop {
        let first_lists = w.reconcile().await;
        if let Some(done) = first_list.take() {
            let count = first_lists.len();
            let all = futures_util::future::join_all(first_lists);
            tokio::select! {
                _ = gantry_proxy::shutdown_requested(&mut shutdown) => break,
                r = tokio::time::timeout(REFERENCE_SYNC_TIMEOUT, all) => if r.is_err() {
                    tracing::warn!(
                        watches = count,
                        "not every referenced Secret and ConfigMap listed within {REFERENCE_SYNC_TIMEOUT:?}; \
                         their Ingresses fail closed until they do"
                    );
                },
            }
            if let FirstList::Sync = done {
                w.ctx.first_list_done();
            }
        }
        tokio::select! {
            _ = gantry_proxy::shutdown_requested(&mut shutdown) => break,
            _ = w.ctx.ingresses_changed.notified() => {}
        }
    }
    w.stop_all().await;
}

/// The keys of `scope` in the store that a complete list did not name.
fn stale_keys(store: &ObjectStore, scope: &Scope, listed: &HashSet<ObjectKey>) -> Vec<ObjectKey> {
    fn pick<'a, V: 'a>(
        map: &'a std::collections::BTreeMap<ObjectKey, V>,
    ) -> Box<dyn Iterator<Item = &'a ObjectKey> + 'a> {
        Box::new(map.keys())
    }
    let keys = match scope.kind {
        Kind::Ingress => pick(store.ingresses()),
        Kind::IngressClass => pick(store.ingress_classes()),
        Kind::Service => pick(store.services()),
        Kind::EndpointSlice => pick(store.endpoint_slices()),
        Kind::Secret => pick(store.secrets()),
        Kind::Node => pick(store.nodes()),
        Kind::ProxyConfig => pick(store.proxy_configs()),
        Kind::ConfigMap => pick(store.config_maps()),
        Kind::GatewayClass => pick(store.gateway_classes()),
        Kind::Gateway => pick(store.gateways()),
        Kind::HttpRoute => pick(store.http_routes()),
        Kind::GrpcRoute => pick(store.grpc_routes()),
        Kind::ReferenceGrant => pick(store.reference_grants()),
        Kind::Namespace => pick(store.namespaces()),
        Kind::BackendTlsPolicy => pick(store.backend_tls_policies()),
    };
    keys.filter(|k| scope.contains(k))
        .filter(|k| !listed.contains(*k))
        .cloned()
        .collect()
}

/// Drops what translation never reads, to keep the store small. See the module documentation.
pub fn slim(mut obj: Object) -> Object {
    match &mut obj {
        Object::Ingress(o) => {
            // ingress-nginx annotations are all read (unknown ones are reported as such).
            let nginx = |k: &str| k.starts_with(crate::annotations::PREFIX);
            slim_meta_keeping(&mut o.metadata, None, nginx);
            if let Some(spec) = &mut o.spec {
                for rule in spec.rules.iter_mut().flatten() {
                    if let Some(http) = &mut rule.http {
                        http.paths.shrink_to_fit();
                    }
                }
                shrink(&mut spec.rules);
                for tls in spec.tls.iter_mut().flatten() {
                    shrink(&mut tls.hosts);
                }
                shrink(&mut spec.tls);
            }
        }
        Object::IngressClass(o) => slim_meta(&mut o.metadata, None),
        Object::Service(o) => {
            slim_meta(&mut o.metadata, None);
            // Backends read the ports (number, name, nodePort, appProtocol) and the cluster IP;
            // the status writer watches the publish Service on its own.
            o.status = None;
            if let Some(spec) = o.spec.take() {
                o.spec = Some(ServiceSpec {
                    cluster_ip: spec.cluster_ip,
                    ports: spec.ports.map(|ports| {
                        ports
                            .into_iter()
                            .map(|p| ServicePort {
                                name: p.name,
                                port: p.port,
                                node_port: p.node_port,
                                app_protocol: p.app_protocol,
                                ..ServicePort::default()
                            })
                            .collect()
                    }),
                    ..ServiceSpec::default()
                });
            }
            if let Some(spec) = &mut o.spec {
                shrink(&mut spec.ports);
            }
        }
        Object::EndpointSlice(o) => {
            slim_meta(&mut o.metadata, Some(SERVICE_NAME_LABEL));
            // Each endpoint's addresses and whether it is ready, each port's name and number: the
            // pod references, node names, zones and hints are half of a slice.
            for endpoint in &mut o.endpoints {
                endpoint.addresses.shrink_to_fit();
                *endpoint = Endpoint {
                    addresses: std::mem::take(&mut endpoint.addresses),
                    conditions: endpoint.conditions.take().map(|c| EndpointConditions {
                        ready: c.ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                };
            }
            for port in o.ports.iter_mut().flatten() {
                port.protocol = None;
                port.app_protocol = None;
            }
            o.endpoints.shrink_to_fit();
            shrink(&mut o.ports);
        }
        Object::Secret(o) => {
            slim_meta(&mut o.metadata, None);
            if let Some(data) = &mut o.data {
                data.retain(|k, _| KEPT_SECRET_KEYS.contains(&k.as_str()));
            }
        }
        Object::Node(o) => {
            slim_meta(&mut o.metadata, None);
            if let Some(status) = o.status.take() {
                // Addresses and readiness are all node-port mode reads; images alone can be tens of KB.
                o.status = Some(NodeStatus {
                    addresses: status.addresses,
                    conditions: status
                        .conditions
                        .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
                    ..NodeStatus::default()
                });
            }
        }
        Object::ProxyConfig(o) => slim_meta(&mut o.metadata, None),
        Object::ConfigMap(o) => {
            // Annotations read `data` (custom-headers: header name → value) only.
            slim_meta(&mut o.metadata, None);
            o.binary_data = None;
        }
        // Status is kept: the status writer compares what it would write with it and skips
        // writes that change nothing.
        Object::GatewayClass(o) => slim_meta(&mut o.metadata, None),
        Object::Gateway(o) => slim_meta(&mut o.metadata, None),
        Object::HttpRoute(o) => slim_meta(&mut o.metadata, None),
        Object::GrpcRoute(o) => slim_meta(&mut o.metadata, None),
        Object::ReferenceGrant(o) => slim_meta(&mut o.metadata, None),
        Object::BackendTlsPolicy(o) => slim_meta(&mut o.metadata, None),
        // Labels are what the listeners' selectors read.
        Object::Namespace(o) => {
            o.metadata.managed_fields = None;
            o.metadata.annotations = None;
            o.spec = None;
            o.status = None;
        }
    }
    obj
}

/// [`slim`] for an object watched because an annotation refers to it: a Secret keeps all of its
/// keys, as the parsers may read any of them (`auth` for an htpasswd file, every key of an
/// `auth-map`, `ca.crt`, `tls.crt` and `tls.key` for certificates). They are few: only the objects
/// referenced are watched.
pub fn slim_referenced(mut obj: Object) -> Object {
    match &mut obj {
        Object::Secret(o) => {
            slim_meta(&mut o.metadata, None);
            obj
        }
        _ => slim(obj),
    }
}

/// Gives back a decoded list's spare room. serde fills a list by pushing (JSON does not say its
/// length), so a one-item list has room for four, and the store keeps Ingresses (and Secrets) as
/// k8s-openapi objects for as long as they live. (Services and EndpointSlices are then stored in
/// the store's own exact-size types, `store::KeptService` and `KeptSlice`; shrinking theirs only
/// lightens a watch batch on its way there.)
fn shrink<T>(list: &mut Option<Vec<T>>) {
    if let Some(list) = list {
        list.shrink_to_fit();
    }
}

fn slim_meta(meta: &mut ObjectMeta, kept_label: Option<&str>) {
    slim_meta_keeping(meta, kept_label, |_| false);
}

/// [`slim_meta`], also keeping the annotations `keep` says yes to.
fn slim_meta_keeping(meta: &mut ObjectMeta, kept_label: Option<&str>, keep: impl Fn(&str) -> bool) {
    meta.managed_fields = None;
    meta.owner_references = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| KEPT_ANNOTATIONS.contains(&k.as_str()) || keep(k));
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
    match (kept_label, &mut meta.labels) {
        (Some(keep), Some(labels)) => labels.retain(|k, _| k == keep),
        _ => meta.labels = None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{NodeAddress, NodeCondition},
        apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
        ByteString,
    };

    use super::*;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("u-1".into()),
            resource_version: Some("7".into()),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_SSL_REDIRECT.to_string(), "false".to_string()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{...}".to_string(),
                ),
                (
                    "nginx.ingress.kubernetes.io/whitelist-source-range".to_string(),
                    "10.0.0.0/8".to_string(),
                ),
            ])),
            labels: Some(BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                (SERVICE_NAME_LABEL.to_string(), "web".to_string()),
            ])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn slimming_keeps_what_translation_reads_and_drops_the_rest() {
        let Object::Ingress(ing) = slim(Object::Ingress(Ingress {
            metadata: meta("web"),
            ..Ingress::default()
        })) else {
            unreachable!()
        };
        let m = &ing.metadata;
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.labels, None);
        // Every ingress-nginx annotation of an Ingress is kept: dropping an access list here would
        // serve the Ingress open.
        assert_eq!(
            m.annotations.as_ref().unwrap().keys().collect::<Vec<_>>(),
            [
                ANNOTATION_SSL_REDIRECT,
                "nginx.ingress.kubernetes.io/whitelist-source-range"
            ]
        );
        assert_eq!(
            (m.uid.as_deref(), m.resource_version.as_deref()),
            (Some("u-1"), Some("7"))
        );

        let Object::EndpointSlice(slice) = slim(Object::EndpointSlice(EndpointSlice {
            metadata: meta("web-1"),
            address_type: "IPv4".into(),
            ..EndpointSlice::default()
        })) else {
            unreachable!()
        };
        assert_eq!(
            slice.metadata.labels.unwrap().keys().collect::<Vec<_>>(),
            [SERVICE_NAME_LABEL]
        );

        // A slice keeps each endpoint's addresses and readiness and each port's name and number;
        // a Service its ports and cluster IP (`translate/tests/backends.rs` translates whole and
        // slimmed ones alike).
        let Object::EndpointSlice(slice) = slim(Object::EndpointSlice(EndpointSlice {
            metadata: meta("web-1"),
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["10.0.0.1".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    serving: Some(true),
                    terminating: Some(true),
                }),
                node_name: Some("node-a".into()),
                zone: Some("zone-a".into()),
                target_ref: Some(Default::default()),
                ..Endpoint::default()
            }],
            ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
            }]),
        })) else {
            unreachable!()
        };
        assert_eq!(
            slice.endpoints,
            [Endpoint {
                addresses: vec!["10.0.0.1".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            }]
        );
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), None)
        );

        let Object::Service(service) = slim(Object::Service(Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                type_: Some("NodePort".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: Some(30080),
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: Some(Default::default()),
        })) else {
            unreachable!()
        };
        assert_eq!(service.status, None);
        assert_eq!(
            service.spec,
            Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: Some(30080),
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            })
        );

        let Object::Secret(secret) = slim(Object::Secret(Secret {
            metadata: meta("tls"),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(b"c".to_vec())),
                ("tls.key".to_string(), ByteString(b"k".to_vec())),
                ("ca.crt".to_string(), ByteString(b"ca".to_vec())),
            ])),
            ..Secret::default()
        })) else {
            unreachable!()
        };
        assert_eq!(
            secret.data.unwrap().keys().collect::<Vec<_>>(),
            ["tls.crt", "tls.key"]
        );

        let Object::Node(node) = slim(Object::Node(Node {
            metadata: meta("n1"),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }]),
                conditions: Some(vec![
                    NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..NodeCondition::default()
                    },
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..NodeCondition::default()
                    },
                ]),
                volumes_in_use: Some(vec!["v".into()]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        })) else {
            unreachable!()
        };
        let status = node.status.unwrap();
        assert_eq!(status.addresses.unwrap().len(), 1);
        assert_eq!(status.conditions.unwrap().len(), 1);
        assert_eq!(status.volumes_in_use, None);
    }

    #[test]
    fn slimmed_lists_keep_no_spare_room() {
        // As the watcher gets them: decoded from JSON, where serde pushes each item, so a one-item
        // list has room for four.
        let slice: EndpointSlice = serde_json::from_str(
            &serde_json::json!({
                "metadata": { "name": "web-abc", "namespace": "ns" },
                "addressType": "IPv4",
                "endpoints": [{ "addresses": ["10.0.0.1"], "conditions": { "ready": true },
                                "nodeName": "n1", "zone": "z" }],
                "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            })
            .to_string(),
        )
        .unwrap();
        assert!(
            slice.endpoints.capacity() > 1,
            "the control: decoding leaves room"
        );
        let Object::EndpointSlice(slice) = slim(Object::EndpointSlice(slice)) else {
            unreachable!()
        };
        assert_eq!(slice.endpoints.capacity(), 1);
        assert_eq!(slice.endpoints[0].addresses, ["10.0.0.1"]);
        assert_eq!(slice.endpoints[0].addresses.capacity(), 1);
        assert_eq!(slice.ports.as_ref().map(Vec::capacity), Some(1));

        let ing: Ingress = serde_json::from_str(
            &serde_json::json!({
                "metadata": { "name": "web", "namespace": "ns" },
                "spec": {
                    "tls": [{ "hosts": ["a.example"], "secretName": "a" }],
                    "rules": [{ "host": "a.example", "http": { "paths": [
                        { "path": "/", "pathType": "Prefix",
                          "backend": { "service": { "name": "web", "port": { "number": 80 } } } },
                        { "path": "/b", "pathType": "Prefix",
                          "backend": { "service": { "name": "web", "port": { "number": 80 } } } },
                    ] } }],
                },
            })
            .to_string(),
        )
        .unwrap();
        let Object::Ingress(ing) = slim(Object::Ingress(ing)) else {
            unreachable!()
        };
        let spec = ing.spec.as_ref().unwrap();
        let rules = spec.rules.as_ref().unwrap();
        assert_eq!(rules.capacity(), 1);
        let paths = &rules[0].http.as_ref().unwrap().paths;
        assert_eq!((paths.len(), paths.capacity()), (2, 2));
        let tls = spec.tls.as_ref().unwrap();
        assert_eq!(tls.capacity(), 1);
        assert_eq!(tls[0].hosts.as_ref().map(Vec::capacity), Some(1));

        let svc: Service = serde_json::from_str(
            &serde_json::json!({
                "metadata": { "name": "web", "namespace": "ns" },
                "spec": { "clusterIP": "10.96.0.10",
                          "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
            })
            .to_string(),
        )
        .unwrap();
        let Object::Service(svc) = slim(Object::Service(svc)) else {
            unreachable!()
        };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).unwrap();
        assert_eq!((ports.len(), ports.capacity()), (1, 1));
        assert_eq!(ports[0].port, 80);
    }

    #[test]
    fn a_relist_finds_stale_objects_only_in_its_own_kind_and_namespace() {
        let mut store = ObjectStore::new();
        for (ns, name) in [("a", "x"), ("a", "y"), ("b", "x")] {
            store.apply(Object::Service(Service {
                metadata: ObjectMeta {
                    namespace: Some(ns.into()),
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                ..Service::default()
            }));
        }
        let listed = HashSet::from([ObjectKey::new("a", "x")]);
        let in_a = Scope::new(Kind::Service, Some("a".into()));
        assert_eq!(stale_keys(&store, &in_a, &listed), [ObjectKey::new("a", "y")]);
        let everywhere = Scope::new(Kind::Service, None);
        assert_eq!(
            stale_keys(&store, &everywhere, &listed),
            [ObjectKey::new("a", "y"), ObjectKey::new("b", "x")]
        );
        let ingresses = Scope::new(Kind::Ingress, None);
        assert!(stale_keys(&store, &ingresses, &HashSet::new()).is_empty());
        // A watch of one object by name: only that object can be stale.
        let one = Scope {
            name: Some("x".into()),
            ..Scope::new(Kind::Service, Some("b".into()))
        };
        assert_eq!(stale_keys(&store, &one, &listed), [ObjectKey::new("b", "x")]);
        assert!(stale_keys(&store, &one, &HashSet::from([ObjectKey::new("b", "x")])).is_empty());
    }

    fn secret(ns: &str, name: &str, ty: &str, keys: &[&str]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            type_: Some(ty.into()),
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(k.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn data_keys(obj: &Object) -> Vec<String> {
        match obj {
            Object::Secret(s) => s.data.iter().flatten().map(|(k, _)| k.clone()).collect(),
            Object::ConfigMap(c) => c.data.iter().flatten().map(|(k, _)| k.clone()).collect(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn referenced_objects_keep_every_key_the_parsers_may_read() {
        // auth-file, auth-map (every key is a user) and certificate Secrets: all keys stay.
        for keys in [
            &["auth"][..],
            &["alice", "bob"],
            &["ca.crt", "tls.crt", "tls.key"],
        ] {
            let slimmed = slim_referenced(Object::Secret(secret("ns", "s", "Opaque", keys)));
            assert_eq!(data_keys(&slimmed), keys, "{keys:?}");
            assert_eq!(slimmed.metadata().managed_fields, None);
        }
        // Even a kubernetes.io/tls Secret, which the TLS watch slims to its certificate and key.
        let tls = Object::Secret(secret(
            "ns",
            "s",
            TLS_SECRET_TYPE,
            &["auth", "ca.crt", "tls.crt", "tls.key"],
        ));
        assert_eq!(data_keys(&slim(tls.clone())), ["tls.crt", "tls.key"]);
        assert_eq!(data_keys(&slim_referenced(tls)).len(), 4);
        // A ConfigMap keeps its data (custom-headers), not its binary data.
        let cm = slim_referenced(Object::ConfigMap(ConfigMap {
            metadata: meta("headers"),
            data: Some(BTreeMap::from([("X-Team".to_string(), "a".to_string())])),
            binary_data: Some(BTreeMap::from([("blob".to_string(), ByteString(vec![0; 64]))])),
            ..ConfigMap::default()
        }));
        assert_eq!(data_keys(&cm), ["X-Team"]);
        let Object::ConfigMap(cm) = cm else { unreachable!() };
        assert_eq!((cm.binary_data, cm.metadata.labels), (None, None));
    }

    /// The TLS watch and a reference watch both see a referenced `kubernetes.io/tls` Secret: while
    /// the reference watch runs, the TLS watch only keeps its own view of it aside.
    #[test]
    fn the_tls_watch_leaves_referenced_secrets_to_their_watch() {
        let mut store = ObjectStore::new();
        let mut referenced = ReferencedSecrets::default();
        let auth = ObjectKey::new("ns", "auth");
        referenced.watched.insert(auth.clone());
        // What the reference watch stored: the whole Secret.
        store.apply(Object::Secret(secret(
            "ns",
            "auth",
            TLS_SECRET_TYPE,
            &["auth", "tls.crt", "tls.key"],
        )));
        let tls_scope = Scope {
            tls_secrets: true,
            ..Scope::new(Kind::Secret, Some("ns".into()))
        };
        let mut tls = Target {
            store: &mut store,
            referenced: Some(&mut referenced),
        };
        tls.apply(slim(Object::Secret(secret(
            "ns",
            "auth",
            TLS_SECRET_TYPE,
            &["auth", "tls.crt", "tls.key"],
        ))));
        tls.apply(slim(Object::Secret(secret(
            "ns",
            "cert",
            TLS_SECRET_TYPE,
            &["tls.crt", "tls.key"],
        ))));
        // A relist that names neither: the TLS watch's own Secret goes, the referenced one stays
        // (its watch decides), and the TLS view of it is dropped.
        assert_eq!(tls.stale(&tls_scope, &HashSet::new()), 1);
        assert!(referenced.tls_view.is_empty());
        assert_eq!(store.secrets().keys().collect::<Vec<_>>(), [&auth]);
        assert_eq!(
            store.secret("ns", "auth").unwrap().data.as_ref().unwrap().len(),
            3,
            "the whole Secret, not the TLS watch's slimmed copy"
        );

        // Listed again: kept aside; deleted: only the view goes.
        let mut tls = Target {
            store: &mut store,
            referenced: Some(&mut referenced),
        };
        tls.apply(slim(Object::Secret(secret(
            "ns",
            "auth",
            TLS_SECRET_TYPE,
            &["tls.crt", "tls.key"],
        ))));
        assert_eq!(tls.stale(&tls_scope, &HashSet::from([auth.clone()])), 0);
        assert!(referenced.tls_view.contains_key(&auth));
        let mut tls = Target {
            store: &mut store,
            referenced: Some(&mut referenced),
        };
        tls.delete(Kind::Secret, &auth);
        assert!(referenced.tls_view.is_empty());
        assert!(store.secret("ns", "auth").is_some());

        // Any other watch writes the store itself.
        let mut other = Target {
            store: &mut store,
            referenced: None,
        };
        other.delete(Kind::Secret, &auth);
        assert!(store.secrets().is_empty());
    }

    fn reference(kind: Kind, ns: &str, name: &str) -> Reference {
        (kind, ObjectKey::new(ns, name))
    }

    fn wanted(refs: &[Reference]) -> BTreeMap<Reference, Vec<ObjectRef>> {
        refs.iter()
            .map(|r| {
                let web = ObjectKey::new(r.1.namespace.as_str(), "web");
                (
                    r.clone(),
                    vec![ObjectRef::new(Kind::Ingress, &web, Some("u-web"))],
                )
            })
            .collect()
    }

    #[test]
    fn one_watch_per_reference_started_and_stopped_as_references_come_and_go() {
        let a = reference(Kind::Secret, "ns", "a");
        let b = reference(Kind::ConfigMap, "ns", "b");
        let c = reference(Kind::Secret, "ns", "c");
        let running: BTreeMap<Reference, ()> = [(a.clone(), ()), (b.clone(), ())].into();
        let p = plan(&running, &[], wanted(&[b.clone(), c.clone()]), 10);
        assert_eq!((p.stop, p.start), (vec![a.clone()], vec![c.clone()]));
        assert!(p.unwatched.is_empty());

        // Nothing changes: nothing to do.
        let p = plan(&running, &[], wanted(&[a.clone(), b.clone()]), 10);
        assert_eq!(p, Plan::default());

        // A name no object can have is not watched (nor reported: it is simply missing).
        let bad = reference(Kind::Secret, "ns", "a,type=x");
        assert_eq!(
            plan(&running, &[], wanted(&[a.clone(), b.clone(), bad]), 10),
            Plan::default()
        );
    }

    #[test]
    fn references_outside_the_watched_namespaces_or_beyond_the_limit_are_not_watched() {
        let namespaces = ["team-a".to_string(), "team-b".to_string()];
        let inside = reference(Kind::Secret, "team-a", "auth");
        let outside = reference(Kind::ConfigMap, "other", "headers");
        let none: BTreeMap<Reference, ()> = BTreeMap::new();
        let p = plan(&none, &namespaces, wanted(&[inside.clone(), outside.clone()]), 10);
        assert_eq!(p.start.len(), 1);
        assert_eq!(p.start[0], inside);
        assert_eq!(
            p.unwatched,
            [(
                outside.clone(),
                Unwatched::OutsideNamespaces,
                vec![ObjectRef::new(
                    Kind::Ingress,
                    &ObjectKey::new("other", "web"),
                    Some("u-web")
                )]
            )]
        );

        // At the limit, running watches stay and new references wait, even ones that sort first.
        let first = reference(Kind::Secret, "team-a", "0-first");
        let running: BTreeMap<Reference, ()> = [(inside.clone(), ())].into();
        let p = plan(&running, &namespaces, wanted(&[first.clone(), inside.clone()]), 1);
        assert!(p.start.is_empty() && p.stop.is_empty());
        assert_eq!(p.unwatched.len(), 1);
        assert_eq!((&p.unwatched[0].0, p.unwatched[0].1), (&first, Unwatched::Limit));
        // A stopped watch makes room in the same pass.
        let p = plan(&running, &namespaces, wanted(std::slice::from_ref(&first)), 1);
        assert_eq!((p.stop, p.start), (vec![inside], vec![first]));
    }

    #[test]
    fn an_invalid_object_s_diagnostic_goes_with_the_object_whatever_its_uid() {
        let invalid = |kind: Kind, name: &str, uid: &str| Diagnostic {
            object: ObjectRef::new(kind, &ObjectKey::new("ns", name), Some(uid)),
            reason: crate::manifests::INVALID_OBJECT.into(),
            message: "m".into(),
        };
        let other_reason = Diagnostic {
            reason: "ServiceNotFound".into(),
            ..invalid(Kind::Ingress, "web", "u-1")
        };
        let mut diagnostics = vec![
            invalid(Kind::Ingress, "web", "u-1"),
            invalid(Kind::HttpRoute, "web", "u-2"),
            invalid(Kind::Ingress, "api", "u-3"),
            other_reason.clone(),
        ];
        // Deleted and created again, valid: another uid, the same object.
        let fixed = forget_invalid(&mut diagnostics, Kind::Ingress, &ObjectKey::new("ns", "web"));
        assert_eq!(fixed, Change::Read);
        assert_eq!(
            diagnostics,
            [
                invalid(Kind::HttpRoute, "web", "u-2"),
                invalid(Kind::Ingress, "api", "u-3"),
                other_reason
            ]
        );
        let again = forget_invalid(&mut diagnostics, Kind::Ingress, &ObjectKey::new("ns", "web"));
        assert_eq!(again, Change::Unchanged);
    }

    #[test]
    fn unwatched_reference_diagnostics_replace_only_their_own() {
        let mut state = SourceState::default();
        let other = Diagnostic {
            object: ObjectRef::new(Kind::Ingress, &ObjectKey::new("ns", "x"), None),
            reason: "SomethingElse".into(),
            message: "m".into(),
        };
        state.diagnostics.push(other.clone());
        let d = Diagnostic {
            object: ObjectRef::new(Kind::Ingress, &ObjectKey::new("ns", "web"), None),
            reason: REFERENCE_NOT_WATCHED.into(),
            message: "m".into(),
        };
        replace_diagnostics(&mut state, std::slice::from_ref(&d));
        replace_diagnostics(&mut state, std::slice::from_ref(&d));
        assert_eq!(state.diagnostics, [other.clone(), d]);
        replace_diagnostics(&mut state, &[]);
        assert_eq!(state.diagnostics, [other]);
    }
}
