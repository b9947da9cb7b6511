//! Shared pieces of the cluster-mode tests: the real `gantry` binary pointed at the envtest API
//! server, Kubernetes objects for it, backends on chosen loopback addresses, and bounded waits.
//!
//! Each test file declares `mod common;`, `mod cluster_common;` and
//! `#[path = "support/envtest.rs"] mod envtest;`.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::{
    api::{
        core::v1::{Secret, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
            IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::util::intstr::IntOrString,
    ByteString,
};
use kube::{
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    Api, Client,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    common::{free_port, plain_client, Gantry},
    envtest::TestEnv,
};

pub const CLASS: &str = "gantry";
pub const CONTROLLER: &str = "gantry.dev/ingress-controller";

/// Starts `gantry` in cluster mode against `env` (no `--manifests`), on free loopback ports, and
/// waits until `/readyz` is 200 (at most 60 s).
pub async fn start_gantry(env: &TestEnv, extra: &[&str]) -> Gantry {
    let g = spawn_gantry(env, extra);
    wait_ready(&g, Duration::from_secs(60)).await;
    g
}

/// Starts `gantry` in cluster mode without waiting.
pub fn spawn_gantry(env: &TestEnv, extra: &[&str]) -> Gantry {
    spawn_gantry_with_kubeconfig(env, &env.kubeconfig_path(), extra)
}

/// [`spawn_gantry`] with another kubeconfig than the environment's (one whose server is a relay
/// in front of the API server, say).
pub fn spawn_gantry_with_kubeconfig(env: &TestEnv, kubeconfig: &std::path::Path, extra: &[&str]) -> Gantry {
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let log = env.dir().join(format!("gantry-{admin}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--http-addr", &addr(http).to_string()])
        .args(["--https-addr", &addr(https).to_string()])
        .args(["--admin-addr", &addr(admin).to_string()])
        .arg("--access-log=false")
        .args(extra)
        .env("GANTRY_LOG", "info,gantry=debug")
        .env_remove("GANTRY_MANIFESTS")
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start gantry");
    Gantry {
        child: Some(child),
        http: addr(http),
        https: addr(https),
        admin: addr(admin),
        dir: env.dir().to_path_buf(),
        log,
    }
}

pub async fn wait_ready(g: &Gantry, limit: Duration) {
    let ok = eventually_ok(limit, || async {
        let r = plain_client()
            .get(format!("http://{}/readyz", g.admin))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "gantry not ready within {limit:?}; log:\n{}",
        g.log_text()
    );
}

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
    let r = crate::common::tls_client(host, g.https, false)
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

/// The value of one series of a metric in `/metrics`, e.g. `gantry_kube_relists_total{kind="Ingress"}`
/// (the series exactly as printed); `None` when absent.
pub async fn metric_series(g: &Gantry, series: &str) -> Option<f64> {
    let text = metrics_text(g).await?;
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

/// The sum of every sample of a metric in `/metrics` (all label sets); `None` when absent.
pub async fn metric(g: &Gantry, name: &str) -> Option<f64> {
    metric_labelled(g, name, &[]).await
}

/// Gantry's `/metrics` text; `None` when it does not answer.
async fn metrics_text(g: &Gantry) -> Option<String> {
    plain_client()
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Like [`metric`], summing only the samples whose labels include every `(name, value)` pair of
/// `labels`.
pub async fn metric_labelled(g: &Gantry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = metrics_text(g).await?;
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
        let has = |(k, v): &(&str, &str)| label_text.contains(&format!("{k}=\"{v}\""));
        if metric_name == name && labels.iter().all(has) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

// === Kubernetes objects ===

pub fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectMeta::default()
    }
}

/// The IngressClass `gantry`, owned by Gantry's controller name.
pub fn ingress_class() -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.into()),
            ..IngressClassSpec::default()
        }),
    }
}

/// A ClusterIP Service with one port `port` named `http`, targeting `target`.
pub fn service(ns: &str, name: &str, port: i32, target: u16) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(target.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// An EndpointSlice of `service` listing `addrs`, which must all share one port (use several
/// loopback IPs for several endpoints).
pub fn endpoint_slice(ns: &str, name: &str, service: &str, addrs: &[SocketAddr]) -> EndpointSlice {
    let port = addrs.first().map(|a| a.port()).unwrap_or(80);
    assert!(addrs.iter().all(|a| a.port() == port), "one port per slice");
    let mut m = meta(ns, name);
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        service.to_string(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: addrs
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.ip().to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port.into()),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

/// An Ingress of `class` from (host, path, service, port) rules, all `Prefix`.
pub fn ingress(ns: &str, name: &str, class: &str, rules: &[(&str, &str, &str, i32)]) -> Ingress {
    let rules = rules
        .iter()
        .map(|(host, path, svc, port)| IngressRule {
            host: (!host.is_empty()).then(|| host.to_string()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some(path.to_string()),
                    path_type: "Prefix".into(),
                    backend: IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: svc.to_string(),
                            port: Some(ServiceBackendPort {
                                number: Some(*port),
                                ..ServiceBackendPort::default()
                            }),
                        }),
                        ..IngressBackend::default()
                    },
                }],
            }),
        })
        .collect();
    Ingress {
        metadata: meta(ns, name),
        spec: Some(IngressSpec {
            ingress_class_name: Some(class.into()),
            rules: Some(rules),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// Adds a `spec.tls` entry for `hosts` with `secret`.
pub fn with_tls(mut ing: Ingress, hosts: &[&str], secret: &str) -> Ingress {
    let spec = ing.spec.get_or_insert_with(IngressSpec::default);
    spec.tls.get_or_insert_with(Vec::new).push(IngressTLS {
        hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
        secret_name: Some(secret.into()),
    });
    ing
}

/// A kubernetes.io/tls Secret with a fresh self-signed certificate for `names`.
pub fn tls_secret(ns: &str, name: &str, names: &[&str]) -> Secret {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    raw_tls_secret(
        ns,
        name,
        c.cert.pem().as_bytes(),
        c.signing_key.serialize_pem().as_bytes(),
    )
}

/// A kubernetes.io/tls Secret with the given `tls.crt` and `tls.key` (which need not be valid).
pub fn raw_tls_secret(ns: &str, name: &str, crt: &[u8], key: &[u8]) -> Secret {
    Secret {
        metadata: meta(ns, name),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(crt.to_vec())),
            ("tls.key".to_string(), ByteString(key.to_vec())),
        ])),
        ..Secret::default()
    }
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

impl Cluster {
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

// === backends ===

/// The address test backends listen on and EndpointSlices list.
///
/// The API server refuses loopback addresses in EndpointSlices, and tests may only send traffic to
/// loopback or to a network namespace of their own. So the cluster tests run inside a network
/// namespace that `.ci/test` creates, whose own loopback interface also holds `GANTRY_TEST_POD_IP`
/// (10.123.0.1): every backend, the API server and Gantry live in that namespace, and no packet
/// leaves it.
pub fn host_ip() -> std::net::IpAddr {
    static IP: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
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

/// An HTTP server on a chosen local address, answering JSON `{"service", "pod", "path", "host"}`
/// (`pod` is its address).
pub struct Pod {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pod {
    /// Listens on [`host_ip`] (the address EndpointSlices may list), on a free port.
    pub async fn start(service: &str) -> Pod {
        Self::start_on(service, host_ip(), 0).await
    }

    /// Listens on `ip:port` (`port` 0: any free port).
    pub async fn start_on(service: &str, ip: std::net::IpAddr, port: u16) -> Pod {
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .unwrap_or_else(|e| panic!("binding {ip}:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (service, h) = (Arc::<str>::from(service), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (service, h) = (service.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let body = serde_json::json!({
                            "service": &*service,
                            "pod": addr.to_string(),
                            "path": req.uri().path(),
                            "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
                        });
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string())))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http1()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Pod { addr, hits, task }
    }
}
