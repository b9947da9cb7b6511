//! Cluster mode: kube-runtime watchers fill the shared store.
//!
//! One `watcher` per kind (and, with `--watch-namespace`, per namespace for the namespaced kinds)
//! feeds [`SharedStore`], exactly as the file source does: the rebuild loop downstream never knows
//! where an object came from. Each watcher:
//!
//! - applies every object it lists or sees change, slimmed first ([`slim`]): managed fields, labels
//!   and annotations that translation does not read (an Ingress keeps every
//!   `nginx.ingress.kubernetes.io/*` one), Secret keys other than the certificate and key,
//!   and the bulky parts of Node status are dropped, so the store holds what translation needs and
//!   little more (`kubectl.kubernetes.io/last-applied-configuration` alone doubles an Ingress);
//! - on a (re)list, replaces what it holds: objects of its kind and scope that the new list does not
//!   name are deleted, so objects deleted while the API server was unreachable do go away;
//! - retries failed calls with [`watcher::DefaultBackoff`] (client-go's parameters, 0.8 s doubling to
//!   30 s); a `410 Gone` on a watch restarts it with a fresh list (the watcher does that itself).
//!
//! The store is marked synced once **every** watcher has finished its first list, so the first
//! snapshot never serves a partial view of the cluster. Until then the last snapshot (none, at start)
//! keeps serving and `/readyz` says 503. When the API server goes away, nothing here stops traffic:
//! the store simply stops changing until the watches reconnect.

use std::{
    collections::HashSet,
    fmt::Debug,
    pin::pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::SystemTime,
};

use crate::metrics::{KindLabels, Metrics};
use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Node, NodeStatus, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{
    crd::ProxyConfig,
    runtime::SharedStore,
    store::{Kind, Object, ObjectKey, ObjectStore, SERVICE_NAME_LABEL},
    translate::{
        ANNOTATION_BACKEND_MODE, ANNOTATION_DEFAULT_CLASS, ANNOTATION_INGRESS_CLASS, ANNOTATION_SSL_REDIRECT,
    },
};

/// The only Secrets Gantry reads (the field selector of the Secret watch).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The annotations translation reads; every other annotation is dropped before storing.
const KEPT_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_INGRESS_CLASS,
    ANNOTATION_DEFAULT_CLASS,
    ANNOTATION_BACKEND_MODE,
    ANNOTATION_SSL_REDIRECT,
];

/// The Secret keys translation reads.
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
        watches.add(namespaced::<Secret>(&client, ns), ns, tls_only, Kind::Secret);
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
        ctx.unsynced.fetch_add(1, Ordering::SeqCst);
        watches.futures.push(Box::pin(watch_proxy_configs(
            client.clone(),
            ctx.clone(),
            watches.shutdown.clone(),
        )));
    }
    tracing::info!(
        watches = watches.futures.len(),
        namespaces = ?settings.namespaces,
        nodes = settings.nodes,
        proxy_configs = settings.proxy_configs,
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
        Object: From<K>,
    {
        self.ctx.unsynced.fetch_add(1, Ordering::SeqCst);
        self.futures.push(Box::pin(watch_kind(
            api,
            config,
            Scope {
                kind,
                namespace: namespace.clone(),
            },
            self.ctx.clone(),
            self.shutdown.clone(),
        )));
    }
}

/// The objects one watcher is responsible for: one kind, in one namespace or all of them.
#[derive(Clone, Debug)]
struct Scope {
    kind: Kind,
    /// `None`: every namespace (or a cluster-scoped kind).
    namespace: Option<String>,
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
}

/// Runs one watcher until shutdown.
async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    scope: Scope,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    Object: From<K>,
{
    let kind = scope.kind;
    let stream = watcher(api, config).default_backoff().ready_chunks(BATCH);
    let mut stream = pin!(stream);
    // Keys named by the (re)list in progress; `None` outside a list.
    let mut listed: Option<HashSet<ObjectKey>> = None;
    let mut synced = false;
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
                Ok(watcher::Event::Init) => steps.push(Step::Init),
                Ok(watcher::Event::InitApply(o)) => steps.push(Step::Listed(slim(Object::from(o)))),
                Ok(watcher::Event::InitDone) => steps.push(Step::InitDone),
                Ok(watcher::Event::Apply(o)) => steps.push(Step::Applied(slim(Object::from(o)))),
                Ok(watcher::Event::Delete(o)) => steps.push(Step::Deleted(Object::from(o).key())),
                Err(e) => {
                    ctx.metrics
                        .kube_watch_errors
                        .get_or_create(&KindLabels { kind: kind.as_str() })
                        .inc();
                    tracing::warn!(kind = %kind, namespace = ?scope.namespace, error = %e, "watch failed; retrying with backoff");
                }
            }
        }
        if steps.is_empty() {
            continue;
        }
        let mut first_sync = false;
        ctx.shared.update(|s| {
            for step in steps {
                match step {
                    Step::Init => listed = Some(HashSet::new()),
                    Step::Listed(obj) => {
                        listed.get_or_insert_with(HashSet::new).insert(obj.key());
                        s.store.apply(obj);
                    }
                    Step::InitDone => {
                        let listed = listed.take().unwrap_or_default();
                        let stale = stale_keys(&s.store, &scope, &listed);
                        if !stale.is_empty() {
                            tracing::info!(kind = %kind, namespace = ?scope.namespace, removed = stale.len(), "relist: removing objects deleted meanwhile");
                        }
                        for key in stale {
                            s.store.delete(kind, &key);
                        }
                        tracing::debug!(kind = %kind, namespace = ?scope.namespace, objects = listed.len(), "listed");
                        if !synced {
                            synced = true;
                            first_sync = true;
                        }
                    }
                    Step::Applied(obj) => s.store.apply(obj),
                    Step::Deleted(key) => s.store.delete(kind, &key),
                }
            }
        });
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        ctx.metrics.kube_last_sync.set(now.as_secs_f64());
        if first_sync && ctx.unsynced.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::info!(
                objects = ctx.shared.with_state(|s| s.store.len()),
                "initial list complete"
            );
            ctx.shared.mark_synced();
        }
    }
}

/// Watches ProxyConfigs like any other kind once the CRD is known to be served. Without the CRD
/// (a cluster where only the controller was installed, not the chart's CRDs) this watcher counts as
/// synced with nothing listed, so the controller still starts, and IngressClass parameters that
/// name a ProxyConfig report it missing; installing the CRD later takes a restart. Other errors
/// (API server unreachable) are retried, so a slow API server never costs the ProxyConfig.
async fn watch_proxy_configs(client: Client, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
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
                if ctx.unsynced.fetch_sub(1, Ordering::SeqCst) == 1 {
                    ctx.shared.mark_synced();
                }
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
    let scope = Scope {
        kind: Kind::ProxyConfig,
        namespace: None,
    };
    watch_kind(api, watcher::Config::default(), scope, ctx, shutdown).await;
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
    };
    keys.filter(|k| scope.namespace.as_ref().is_none_or(|ns| &k.namespace == ns))
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
            slim_meta_keeping(&mut o.metadata, None, nginx)
        }
        Object::IngressClass(o) => slim_meta(&mut o.metadata, None),
        Object::Service(o) => slim_meta(&mut o.metadata, None),
        Object::EndpointSlice(o) => slim_meta(&mut o.metadata, Some(SERVICE_NAME_LABEL)),
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
        Object::ConfigMap(o) => slim_meta(&mut o.metadata, None),
    }
    obj
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
        let in_a = Scope {
            kind: Kind::Service,
            namespace: Some("a".into()),
        };
        assert_eq!(stale_keys(&store, &in_a, &listed), [ObjectKey::new("a", "y")]);
        let everywhere = Scope {
            kind: Kind::Service,
            namespace: None,
        };
        assert_eq!(
            stale_keys(&store, &everywhere, &listed),
            [ObjectKey::new("a", "y"), ObjectKey::new("b", "x")]
        );
        let ingresses = Scope {
            kind: Kind::Ingress,
            namespace: None,
        };
        assert!(stale_keys(&store, &ingresses, &HashSet::new()).is_empty());
    }
}
