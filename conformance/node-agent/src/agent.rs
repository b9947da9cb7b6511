//! The agent: registers its Node, binds unscheduled Pods to it (the rig has no kube-scheduler),
//! runs the Pods bound to it, reports their status, and removes them once they are deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Binding, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo, ObjectReference, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::process::Child;
use tokio::sync::{Mutex, Notify};

use crate::kubelet::{self, LogIndex};
use crate::pod::{self, PodFacts};
use crate::runtime::{self, ImageTable, Launch, Network};

/// How often local Pods are checked (process alive, readiness) when nothing else happens.
const TICK: Duration = Duration::from_secs(1);
/// How often the Node's Ready condition is refreshed.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Restart back-off cap; the kubelet's is 5 minutes, far too long for a test rig.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Retry interval for an image that is not in the table (it will not appear by itself, but the
/// Pod must still show the reason; a slow retry keeps that honest and cheap).
const IMAGE_RETRY: Duration = Duration::from_secs(30);

pub struct Config {
    pub node_name: String,
    pub network: Network,
    pub images: ImageTable,
    pub state_dir: PathBuf,
    /// The kubelet API's port (container logs), on the node address.
    pub kubelet_port: u16,
}

pub struct Agent {
    client: Client,
    cfg: Config,
    pods: Mutex<HashMap<String, LocalPod>>,
    wake: Notify,
    /// The running Pods' log files, for the kubelet API.
    logs: Arc<LogIndex>,
    /// The Node's Ready condition has been True since then (heartbeats only move lastHeartbeatTime).
    ready_since: Timestamp,
}

struct LocalPod {
    pod: Pod,
    ip: Option<Ipv4Addr>,
    netns: Option<String>,
    net_retry_at: Instant,
    dir: PathBuf,
    start_time: Timestamp,
    ready_changed: Timestamp,
    was_ready: bool,
    containers: Vec<Ctr>,
    last_sent: Option<serde_json::Value>,
}

struct Ctr {
    name: String,
    image: String,
    child: Option<Child>,
    started_at: Option<Timestamp>,
    restarts: i32,
    ready: bool,
    waiting: Option<(String, String)>,
    last_exit: Option<(i32, Timestamp, Timestamp)>,
    /// Exited and not restarted (restartPolicy Never/OnFailure).
    done: bool,
    retry_at: Instant,
}

impl Agent {
    pub fn new(client: Client, cfg: Config) -> Arc<Agent> {
        Arc::new(Agent {
            client,
            cfg,
            pods: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            logs: Arc::new(LogIndex::default()),
            ready_since: Timestamp::now(),
        })
    }

    /// Runs until `shutdown` resolves, then stops every local Pod.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        self.cfg
            .network
            .setup()
            .await
            .context("setting up the node bridge")?;
        std::fs::create_dir_all(self.cfg.state_dir.join("pods"))?;
        // The node address exists once the bridge holds it.
        let kubelet_addr = std::net::SocketAddr::from((self.cfg.network.gateway(), self.cfg.kubelet_port));
        kubelet::serve(
            kubelet_addr,
            vec![self.cfg.network.gateway().to_string(), self.cfg.node_name.clone()],
            Arc::clone(&self.logs),
        )
        .await
        .context("starting the kubelet API")?;
        tracing::info!(addr = %kubelet_addr, "kubelet API (container logs) listening");
        self.register_node().await.context("registering the Node")?;
        tracing::info!(node = %self.cfg.node_name, ip = %self.cfg.network.gateway(), "node registered");

        let heartbeat = tokio::spawn(Arc::clone(&self).heartbeat());
        let ticker = tokio::spawn(Arc::clone(&self).tick_loop());
        let watch = tokio::spawn(Arc::clone(&self).watch_pods());
        shutdown.await;
        tracing::info!("shutting down: stopping all pods");
        heartbeat.abort();
        ticker.abort();
        watch.abort();
        let mut pods = self.pods.lock().await;
        for (_, mut p) in pods.drain() {
            self.teardown(&mut p).await;
        }
        Ok(())
    }

    async fn register_node(&self) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        if api.get_opt(&self.cfg.node_name).await?.is_none() {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(self.cfg.node_name.clone()),
                    labels: Some(BTreeMap::from([
                        ("kubernetes.io/hostname".into(), self.cfg.node_name.clone()),
                        ("kubernetes.io/os".into(), "linux".into()),
                        ("kubernetes.io/arch".into(), std::env::consts::ARCH.into()),
                    ])),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            };
            api.create(&PostParams::default(), &node).await?;
        }
        self.patch_node_status().await
    }

    async fn patch_node_status(&self) -> Result<()> {
        let now = Time(Timestamp::now());
        let resources = BTreeMap::from([
            ("cpu".to_string(), Quantity("8".into())),
            ("memory".to_string(), Quantity("16Gi".into())),
            ("pods".to_string(), Quantity("250".into())),
        ]);
        let status = NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.cfg.network.gateway().to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.cfg.node_name.clone(),
                },
            ]),
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("gantry-node-agent is running pods as local processes".into()),
                last_heartbeat_time: Some(now),
                last_transition_time: Some(Time(self.ready_since)),
            }]),
            // Where the API server reaches this agent for `pods/log`.
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(self.cfg.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.into(),
                operating_system: "linux".into(),
                kubelet_version: "v1.34.10-gantry-node-agent".into(),
                container_runtime_version: "gantry-node-agent://0.1.0".into(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({ "status": status });
        api.patch_status(
            &self.cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = self.patch_node_status().await {
                tracing::warn!("node heartbeat: {e:#}");
            }
        }
    }

    async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        // Pods seen during a (re)list; local pods not among them were deleted meanwhile.
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(p)) => {
                    if let (Some(set), Some(uid)) = (listed.as_mut(), p.metadata.uid.clone()) {
                        set.insert(uid);
                    }
                    self.on_pod(p).await;
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(set) = listed.take() {
                        let mut pods = self.pods.lock().await;
                        let gone: Vec<String> = pods.keys().filter(|u| !set.contains(*u)).cloned().collect();
                        for uid in gone {
                            if let Some(mut p) = pods.remove(&uid) {
                                self.teardown(&mut p).await;
                            }
                        }
                    }
                }
                Ok(watcher::Event::Apply(p)) => self.on_pod(p).await,
                Ok(watcher::Event::Delete(p)) => {
                    let removed = match &p.metadata.uid {
                        Some(uid) => self.pods.lock().await.remove(uid),
                        None => None,
                    };
                    if let Some(mut local) = removed {
                        self.teardown(&mut local).await;
                    }
                }
                Err(e) => {
                    tracing::warn!("pod watch: {e}");
                    // The watcher retries by itself; this only keeps a broken API from spinning.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn on_pod(&self, pod: Pod) {
        let (Some(ns), Some(name), Some(uid)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            return;
        };
        let Some(spec) = pod.spec.as_ref() else { return };
        let node = spec.node_name.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if node.is_empty() {
            let ours = spec
                .scheduler_name
                .as_deref()
                .is_none_or(|s| s == "default-scheduler");
            if ours && !deleting {
                if let Err(e) = self.bind(&ns, &name, &uid).await {
                    tracing::warn!(pod = %format!("{ns}/{name}"), "binding: {e:#}");
                }
            }
            return;
        }
        if node != self.cfg.node_name {
            return;
        }
        if deleting {
            let removed = self.pods.lock().await.remove(&uid);
            if let Some(mut local) = removed {
                self.teardown(&mut local).await;
            }
            // The kubelet's part of deletion: confirm the Pod is gone, so it is removed at once.
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams::default()
                .grace_period(0)
                .preconditions(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                });
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), "deleting: {e}"),
            }
            return;
        }
        let mut pods = self.pods.lock().await;
        if let Some(local) = pods.get_mut(&uid) {
            local.pod = pod;
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let containers = spec
            .containers
            .iter()
            .map(|c| Ctr {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                child: None,
                started_at: None,
                restarts: 0,
                ready: false,
                waiting: Some(("ContainerCreating".into(), String::new())),
                last_exit: None,
                done: false,
                retry_at: Instant::now(),
            })
            .collect();
        let dir = self.cfg.state_dir.join("pods").join(pod::sanitize(&uid));
        tracing::info!(pod = %format!("{ns}/{name}"), "accepted");
        self.logs.insert(
            &ns,
            &name,
            &uid,
            dir.clone(),
            spec.containers.iter().map(|c| c.name.clone()).collect(),
        );
        pods.insert(
            uid,
            LocalPod {
                pod,
                ip: None,
                netns: None,
                net_retry_at: Instant::now(),
                dir,
                start_time: Timestamp::now(),
                ready_changed: Timestamp::now(),
                was_ready: false,
                containers,
                last_sent: None,
            },
        );
        drop(pods);
        self.wake.notify_one();
    }

    async fn bind(&self, ns: &str, name: &str, uid: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                uid: Some(uid.to_string()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.cfg.node_name.clone()),
                ..ObjectReference::default()
            },
        };
        match api
            .create_subresource::<_, serde_json::Value>("binding", name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), node = %self.cfg.node_name, "bound");
                Ok(())
            }
            // Already bound (a repeated event) or gone: nothing to do.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn tick_loop(self: Arc<Self>) {
        loop {
            let _ = tokio::time::timeout(TICK, self.wake.notified()).await;
            let mut pods = self.pods.lock().await;
            // Addresses in use; `sync` adds the ones it hands out.
            let mut used: HashSet<Ipv4Addr> = pods.values().filter_map(|p| p.ip).collect();
            for local in pods.values_mut() {
                self.sync(local, &mut used).await;
            }
        }
    }

    /// One pass over a local Pod: network, processes, readiness, status.
    async fn sync(&self, p: &mut LocalPod, used: &mut HashSet<Ipv4Addr>) {
        let key = format!(
            "{}/{}",
            p.pod.metadata.namespace.as_deref().unwrap_or_default(),
            p.pod.metadata.name.as_deref().unwrap_or_default()
        );
        if p.netns.is_none() && Instant::now() >= p.net_retry_at {
            if let Err(e) = self.setup_network(p, used).await {
                tracing::warn!(pod = %key, "network: {e:#}");
                p.net_retry_at = Instant::now() + Duration::from_secs(5);
                for c in &mut p.containers {
                    c.waiting = Some(("ContainerCreating".into(), format!("pod network: {e:#}")));
                }
            }
        }
        if let (Some(ip), Some(netns)) = (p.ip, p.netns.clone()) {
            let restart_policy = p
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.clone())
                .unwrap_or_else(|| "Always".into());
            for i in 0..p.containers.len() {
                self.sync_container(p, i, ip, &netns, &restart_policy, &key).await;
            }
        }
        let all_ready = !p.containers.is_empty() && p.containers.iter().all(|c| c.ready);
        if all_ready != p.was_ready {
            p.was_ready = all_ready;
            p.ready_changed = Timestamp::now();
        }
        let status = serde_json::json!({ "status": self.status(p) });
        if p.last_sent.as_ref() != Some(&status) {
            let (ns, name) = (
                p.pod.metadata.namespace.clone().unwrap_or_default(),
                p.pod.metadata.name.clone().unwrap_or_default(),
            );
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => p.last_sent = Some(status),
                Err(e) => tracing::warn!(pod = %key, "status: {e}"),
            }
        }
    }

    async fn setup_network(&self, p: &mut LocalPod, used: &mut HashSet<Ipv4Addr>) -> Result<()> {
        let ip = match p.ip {
            Some(ip) => ip,
            None => {
                let ip = self
                    .cfg
                    .network
                    .allocate(used)
                    .context("the pod CIDR is exhausted")?;
                used.insert(ip);
                p.ip = Some(ip);
                ip
            }
        };
        p.netns = Some(self.cfg.network.add_pod(ip).await?);
        std::fs::create_dir_all(&p.dir)?;
        Ok(())
    }

    async fn sync_container(
        &self,
        p: &mut LocalPod,
        i: usize,
        ip: Ipv4Addr,
        netns: &str,
        restart_policy: &str,
        key: &str,
    ) {
        let spec = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.get(i))
            .cloned()
            .unwrap_or_default();
        let c = &mut p.containers[i];
        if let Some(child) = c.child.as_mut() {
            match child.try_wait() {
                Ok(None) => {
                    let pid = child.id().unwrap_or(0);
                    c.ready = pod::ready(&spec, ip, pid).await;
                    return;
                }
                Ok(Some(exit)) => {
                    let code = exit.code().unwrap_or(128 + 9);
                    tracing::info!(pod = %key, container = %c.name, code, "container exited");
                    let started = c.started_at.unwrap_or_else(Timestamp::now);
                    c.last_exit = Some((code, started, Timestamp::now()));
                    c.child = None;
                    c.ready = false;
                    let restart = match restart_policy {
                        "Never" => false,
                        "OnFailure" => code != 0,
                        _ => true,
                    };
                    if !restart {
                        c.done = true;
                        return;
                    }
                    c.restarts += 1;
                    let backoff = Duration::from_secs(u64::from(c.restarts.unsigned_abs())).min(MAX_BACKOFF);
                    c.retry_at = Instant::now() + backoff;
                    c.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!("exited with {code}; restarting in {}s", backoff.as_secs()),
                    ));
                }
                Err(e) => {
                    tracing::warn!(pod = %key, "waiting for container: {e}");
                    return;
                }
            }
        }
        if c.done || Instant::now() < c.retry_at {
            return;
        }
        let Some(binary) = self.cfg.images.resolve(&c.image).map(PathBuf::from) else {
            c.waiting = Some((
                "ErrImagePull".into(),
                format!(
                    "image {:?} has no local binary in gantry-node-agent's image table (--image NAME=PATH)",
                    c.image
                ),
            ));
            c.retry_at = Instant::now() + IMAGE_RETRY;
            return;
        };
        let facts = PodFacts {
            pod: &p.pod,
            pod_ip: ip,
            host_ip: self.cfg.network.gateway(),
            node_name: &self.cfg.node_name,
        };
        let prepared = async {
            let env = pod::container_env(&self.client, &facts, &spec).await?;
            let args = pod::container_args(&spec, &env);
            let vol_dir = p.dir.join("volumes").join(pod::sanitize(&c.name));
            let mounts = pod::volumes(&self.client, &p.pod, &spec, &vol_dir).await?;
            let launch = Launch {
                netns: netns.to_string(),
                binary,
                args,
                env,
                mounts,
                workdir: p.dir.clone(),
                log: p.dir.join(format!("{}.log", pod::sanitize(&c.name))),
            };
            runtime::spawn(&launch)
        }
        .await;
        match prepared {
            Ok(child) => {
                tracing::info!(pod = %key, container = %c.name, pid = child.id().unwrap_or(0), %ip, "started");
                c.child = Some(child);
                c.started_at = Some(Timestamp::now());
                c.waiting = None;
            }
            Err(e) => {
                tracing::warn!(pod = %key, container = %c.name, "cannot start: {e:#}");
                c.waiting = Some(("CreateContainerConfigError".into(), format!("{e:#}")));
                c.retry_at = Instant::now() + Duration::from_secs(3);
            }
        }
    }

    fn status(&self, p: &LocalPod) -> PodStatus {
        let t = |ts: Timestamp| Some(Time(ts));
        let cond = |type_: &str, ok: bool, since: Timestamp| PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: t(since),
            ..PodCondition::default()
        };
        let all_started = p.containers.iter().all(|c| c.started_at.is_some());
        let all_done = !p.containers.is_empty() && p.containers.iter().all(|c| c.done);
        let phase = if all_done {
            if p.containers
                .iter()
                .all(|c| matches!(c.last_exit, Some((0, _, _))))
            {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if all_started && p.netns.is_some() {
            "Running"
        } else {
            "Pending"
        };
        let statuses = p
            .containers
            .iter()
            .map(|c| {
                let terminated =
                    |(code, started, finished): (i32, Timestamp, Timestamp)| ContainerStateTerminated {
                        exit_code: code,
                        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                        started_at: t(started),
                        finished_at: t(finished),
                        ..ContainerStateTerminated::default()
                    };
                let state = if c.done {
                    c.last_exit.map(|e| ContainerState {
                        terminated: Some(terminated(e)),
                        ..ContainerState::default()
                    })
                } else if let (Some(_), Some(started)) = (&c.child, c.started_at) {
                    Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: t(started),
                        }),
                        ..ContainerState::default()
                    })
                } else {
                    let (reason, message) = c.waiting.clone().unwrap_or_default();
                    Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason),
                            message: Some(message).filter(|m| !m.is_empty()),
                        }),
                        ..ContainerState::default()
                    })
                };
                let running = c.child.is_some();
                ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: String::new(),
                    container_id: c
                        .child
                        .as_ref()
                        .and_then(Child::id)
                        .map(|pid| format!("gantry://{pid}")),
                    ready: c.ready,
                    started: Some(running),
                    restart_count: c.restarts,
                    state,
                    last_state: c.last_exit.filter(|_| !c.done).map(|e| ContainerState {
                        terminated: Some(terminated(e)),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }
            })
            .collect();
        let host_ip = self.cfg.network.gateway().to_string();
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![
                cond("PodScheduled", true, p.start_time),
                cond("Initialized", true, p.start_time),
                cond("ContainersReady", p.was_ready, p.ready_changed),
                cond("Ready", p.was_ready, p.ready_changed),
            ]),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: host_ip }]),
            pod_ip: p.ip.map(|ip| ip.to_string()),
            pod_ips: p.ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
            start_time: t(p.start_time),
            container_statuses: Some(statuses),
            ..PodStatus::default()
        }
    }

    /// Kills the Pod's processes and removes its network namespace and files.
    async fn teardown(&self, p: &mut LocalPod) {
        let meta = &p.pod.metadata;
        self.logs.remove(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
        );
        for c in &mut p.containers {
            if let Some(mut child) = c.child.take() {
                runtime::kill(&mut child).await;
            }
        }
        if let Some(ns) = p.netns.take() {
            if let Err(e) = self.cfg.network.remove_pod(&ns).await {
                tracing::warn!(netns = %ns, "removing: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&p.dir);
        tracing::info!(
            pod = %format!("{}/{}", p.pod.metadata.namespace.as_deref().unwrap_or_default(), p.pod.metadata.name.as_deref().unwrap_or_default()),
            "stopped"
        );
    }
}
