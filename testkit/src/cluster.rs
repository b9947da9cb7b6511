//! What the cluster tests do with the control plane: a namespace of their own, server-side apply,
//! backends on the pod IP, and bounded waits on what Gantry serves.
//!
//! Gantry itself starts from the builder: `gantry!().cluster(&env).args(extra).start().await`.

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice, networking::v1::Ingress};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    binary::Gantry,
    client::{plain_client, tls_client},
    echo::Echo,
    envtest::TestEnv,
    objects::{endpoint_slice, service},
};

/// Polls `f` every 100 ms until it gives `Some`, at most `limit`.
pub async fn eventually_ok<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Like [`eventually_ok`], panicking with `what`, the last value seen and gantry's log on timeout.
pub async fn eventually<T: std::fmt::Debug, F, Fut>(g: &Gantry, limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {limit:?}; last seen: {last}\ngantry log:\n{}",
                tail(&g.log_text(), 60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A GET to gantry's plain listener with `Host: host`: the status and the body as JSON (`Null` when
/// it is not JSON).
pub async fn get(g: &Gantry, host: &str, path: &str) -> Result<(u16, serde_json::Value), String> {
    let r = plain_client()
        .get(g.url(path))
        .header("host", host)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Like [`get`], over HTTPS (SNI and Host `host`; any certificate accepted).
pub async fn get_https(g: &Gantry, host: &str, path: &str) -> Result<(u16, serde_json::Value), String> {
    let r = tls_client(host, g.https, false)
        .get(format!("https://{host}{path}"))
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Waits until `https://host/path` answers 200 from `service` (at most `limit`).
pub async fn wait_https_served_by(g: &Gantry, limit: Duration, host: &str, path: &str, service: &str) {
    eventually(
        g,
        limit,
        &format!("https://{host}{path} served by {service}"),
        || async {
            match get_https(g, host, path).await? {
                (200, body) if body["service"] == service => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Waits until `host` + `path` answers 200 from `service` (at most `limit`); returns the body.
pub async fn wait_served_by(
    g: &Gantry,
    limit: Duration,
    host: &str,
    path: &str,
    service: &str,
) -> serde_json::Value {
    eventually(g, limit, &format!("{host}{path} served by {service}"), || async {
        match get(g, host, path).await? {
            (200, body) if body["service"] == service => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Waits until `host` + `path` answers `status` (at most `limit`).
pub async fn wait_status(g: &Gantry, limit: Duration, host: &str, path: &str, status: u16) {
    eventually(g, limit, &format!("{host}{path} answering {status}"), || async {
        match get(g, host, path).await? {
            (s, _) if s == status => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Creates or replaces `obj` (server-side apply, forced), returning what the API server stored.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().expect("named object");
    let mut obj = obj.clone();
    obj.meta_mut().resource_version = None;
    obj.meta_mut().managed_fields = None;
    // Apply needs apiVersion and kind in the body.
    let dt = K::DynamicType::default();
    let mut value = serde_json::to_value(&obj).unwrap();
    value["apiVersion"] = K::api_version(&dt).into();
    value["kind"] = K::kind(&dt).into();
    api.patch(
        &name,
        &PatchParams::apply("gantry-tests").force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", K::kind(&dt)))
}

/// Creates `obj`, panicking when the API server refuses.
pub async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    api.create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("creating {:?}: {e}", obj.meta().name))
}

/// The objects one test works with, in its namespace.
pub struct Cluster {
    pub client: Client,
    pub ns: String,
}

// === impl Cluster ===

impl Cluster {
    /// An administrator client and a new namespace `<prefix>-<random>`.
    pub async fn new(env: &TestEnv, prefix: &str) -> Cluster {
        Cluster {
            client: env.client().await,
            ns: env.new_namespace(prefix).await,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn cluster_api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>,
        K::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }

    /// Service `name` (port 80, named `http`) with EndpointSlices `name-1`, `name-2`, ... listing
    /// `addrs`, one slice per port (a slice has one port list, as the EndpointSlice controller
    /// also splits them).
    pub async fn backend(&self, name: &str, addrs: &[SocketAddr]) {
        let target = addrs.first().map(|a| a.port()).unwrap_or(80);
        apply(&self.api::<Service>(), &service(&self.ns, name, 80, target)).await;
        self.endpoints(name, addrs).await;
    }

    /// (Re)writes the EndpointSlices `name-1`, `name-2`, ... of Service `name`: one per port.
    pub async fn endpoints(&self, name: &str, addrs: &[SocketAddr]) {
        let mut by_port: BTreeMap<u16, Vec<SocketAddr>> = BTreeMap::new();
        for a in addrs {
            by_port.entry(a.port()).or_default().push(*a);
        }
        for (i, addrs) in by_port.values().enumerate() {
            apply(
                &self.api::<EndpointSlice>(),
                &endpoint_slice(&self.ns, &format!("{name}-{}", i + 1), name, addrs),
            )
            .await;
        }
    }

    /// The IP addresses and host names in an Ingress's `status.loadBalancer.ingress`, sorted.
    pub async fn ingress_status(&self, name: &str) -> Vec<String> {
        let ing = self.api::<Ingress>().get(name).await.expect("get ingress");
        let mut out: Vec<String> = ing
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.ip.or(e.hostname))
            .collect();
        out.sort();
        out
    }
}

// === the pod IP ===

/// The address backends listen on and EndpointSlices list.
///
/// The API server refuses loopback addresses in EndpointSlices, and tests may only send traffic to
/// loopback or to a network namespace of their own. So the cluster tests run inside a network
/// namespace that `.ci/test` creates, whose own loopback interface also holds `GANTRY_TEST_POD_IP`
/// (10.123.0.1): every backend, the API server and Gantry live in that namespace, and no packet
/// leaves it.
pub fn host_ip() -> IpAddr {
    static IP: std::sync::OnceLock<IpAddr> = std::sync::OnceLock::new();
    *IP.get_or_init(|| {
        std::env::var("GANTRY_TEST_POD_IP")
            .ok()
            .and_then(|v| v.parse().ok())
            .expect(
                "the cluster tests need GANTRY_TEST_POD_IP, an address in a network namespace of their own: \
             run them through .ci/test (it creates the namespace)",
            )
    })
}

/// An [`Echo`] backend named `service` on [`host_ip`] (an address EndpointSlices may list), on a
/// free port.
pub async fn pod(service: &str) -> Echo {
    Echo::builder(service).ip(host_ip()).start().await
}
