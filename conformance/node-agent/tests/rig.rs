//! The conformance rig end to end: `conformance/rig.sh start` (etcd, kube-apiserver,
//! kube-controller-manager and gantry-node-agent in a network namespace of their own), then a
//! Deployment of echo-basic with a Service, as the Gateway API conformance suite deploys them.
//!
//! Needs root (network namespaces), curl (to call the agent's kubelet API directly) and the
//! cached binaries of `controller/testenv/build-control-plane.sh` and `conformance/build-rig.sh`;
//! it fails with a message naming the script to run when they are missing. Everything it starts is bounded by
//! `GANTRY_RIG_LIFETIME` and stopped by `rig.sh stop` when the test ends.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const K8S_VERSION: &str = "v1.34.10";
const GATEWAY_API_VERSION: &str = "v1.6.3";
/// Every wait below is bounded by this.
const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "rig-test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache_root() -> PathBuf {
    match std::env::var_os("GANTRY_CACHE_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gantry"),
    }
}

fn has_all(dir: &Path, bins: &[&str]) -> bool {
    bins.iter().all(|b| dir.join(b).is_file())
}

/// The control plane folder: `KUBEBUILDER_ASSETS`, else the cache of build-control-plane.sh.
fn control_plane() -> Result<PathBuf> {
    let bins = ["etcd", "kube-apiserver", "kubectl"];
    if let Some(d) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if has_all(&d, &bins) {
            return Ok(d);
        }
    }
    let root = cache_root().join("control-plane");
    let prefix = format!("k8s-{K8S_VERSION}-etcd-");
    let found = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .find(|p| has_all(p, &bins));
    found.ok_or_else(|| {
        anyhow!(
            "no kube-apiserver/etcd/kubectl in KUBEBUILDER_ASSETS or {}: run controller/testenv/build-control-plane.sh",
            root.display()
        )
    })
}

/// The rig's own binaries: `GANTRY_RIG_BIN`, else the cache of conformance/build-rig.sh.
fn rig_binaries() -> Result<PathBuf> {
    let bins = ["kube-controller-manager", "echo-basic"];
    let dir = match std::env::var_os("GANTRY_RIG_BIN").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => cache_root()
            .join("conformance-rig")
            .join(format!("k8s-{K8S_VERSION}-gwapi-{GATEWAY_API_VERSION}")),
    };
    if has_all(&dir, &bins) {
        Ok(dir)
    } else {
        bail!(
            "kube-controller-manager/echo-basic are missing in {}: run conformance/build-rig.sh",
            dir.display()
        )
    }
}

/// Runs `rig.sh stop` when dropped, also when the test panics.
struct Rig {
    dir: tempfile::TempDir,
    netns: String,
    env: Vec<(String, String)>,
    /// The control plane folder (kubectl).
    assets: PathBuf,
}

impl Rig {
    fn start() -> Result<Rig> {
        let assets = control_plane()?;
        let bin = rig_binaries()?;
        let dir = tempfile::Builder::new().prefix("gantry-rig-test-").tempdir()?;
        let netns = format!("gantry-rigtest-{}", std::process::id());
        let env = vec![
            (
                "GANTRY_RIG_DIR".into(),
                dir.path().join("rig").display().to_string(),
            ),
            ("GANTRY_RIG_NETNS".into(), netns.clone()),
            ("GANTRY_RIG_LIFETIME".into(), "900".into()),
            ("GANTRY_RIG_TIMEOUT".into(), "90".into()),
            (
                "GANTRY_NODE_AGENT".into(),
                env!("CARGO_BIN_EXE_gantry-node-agent").into(),
            ),
            ("KUBEBUILDER_ASSETS".into(), assets.display().to_string()),
            ("GANTRY_RIG_BIN".into(), bin.display().to_string()),
        ];
        let rig = Rig {
            dir,
            netns,
            env,
            assets,
        };
        let status = rig
            .script("start")
            .status()
            .context("running conformance/rig.sh start")?;
        if !status.success() {
            bail!("conformance/rig.sh start failed with {status} (its output is above)");
        }
        Ok(rig)
    }

    fn script(&self, verb: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("conformance/rig.sh"))
            .arg(verb)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("rig/kubeconfig")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.script("stop").status();
    }
}

#[test]
fn echo_basic_deployment_runs_as_local_processes() {
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    assert!(
        is_root,
        "the rig test needs root (network namespaces); run it as CI does"
    );
    let rig = Rig::start().unwrap_or_else(|e| panic!("{e:#}"));
    let kubeconfig = rig.kubeconfig();
    let kubectl = Kubectl {
        bin: rig.assets.join("kubectl"),
        kubeconfig: kubeconfig.clone(),
    };
    let netns = rig.netns.clone();
    // The API server and the pods are only reachable inside the rig's network namespace, so the
    // checks run on a thread moved into it, with a single-threaded runtime: every socket is
    // opened on that thread. (The API server URL is an IP literal, so no resolver thread is used.)
    let checks = std::thread::spawn(move || -> Result<()> {
        let ns_file = std::fs::File::open(format!("/run/netns/{netns}"))?;
        rustix::thread::move_into_link_name_space(
            ns_file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run_checks(&kubeconfig, &kubectl))
    });
    let result = checks
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the check thread panicked")));
    if let Err(e) = result {
        let logs = rig.dir.path().join("rig");
        let mut report = format!("{e:#}\n");
        for name in ["node-agent", "kube-controller-manager"] {
            let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            report.push_str(&format!(
                "--- last lines of {name}.log ---\n{}\n",
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        panic!("{report}");
    }
}

async fn run_checks(kubeconfig: &Path, kubectl: &Kubectl) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)?;
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({ "metadata": { "name": NS } }))?,
        )
        .await?;
    // As the conformance suite's infra-backend-v1 (conformance/base/manifests.yaml).
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "echo", "namespace": NS },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "echo" } },
            "template": {
                "metadata": { "labels": { "app": "echo" } },
                "spec": { "containers": [{
                    "name": "echo",
                    "image": "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
                    "env": [
                        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                        { "name": "NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }
                    ]
                }]}
            }
        }
    }))?;
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "echo", "namespace": NS },
        "spec": { "selector": { "app": "echo" }, "ports": [{ "port": 8080, "targetPort": 3000 }] }
    }))?;
    // Service accounts are made by kube-controller-manager shortly after the namespace; the
    // ReplicaSet controller retries pods that the ServiceAccount admission rejected meanwhile.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments.create(&pp, &deployment).await?;
    Api::<Service>::namespaced(client.clone(), NS)
        .create(&pp, &service)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // 1. Two Ready pods with distinct pod IPs, each a running local process.
    let ready = wait("2 Ready echo pods", || async {
        let list = pods.list(&ListParams::default().labels("app=echo")).await?;
        let ready: Vec<(String, Ipv4Addr, u32)> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter_map(|p| {
                let status = p.status.as_ref()?;
                let ip = status.pod_ip.as_deref()?.parse().ok()?;
                let pid = status
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .container_id
                    .as_deref()?
                    .strip_prefix("gantry://")?
                    .parse()
                    .ok()?;
                Some((p.metadata.name.clone()?, ip, pid))
            })
            .collect();
        Ok((ready.len() == 2).then_some(ready))
    })
    .await?;
    let ips: BTreeSet<Ipv4Addr> = ready.iter().map(|(_, ip, _)| *ip).collect();
    assert_eq!(ips.len(), 2, "pod IPs must differ: {ready:?}");
    for (name, ip, pid) in &ready {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{name}: process {pid} is not running"
        );
        assert!(
            "10.124.0.0/16".parse::<ipnet::Ipv4Net>()?.contains(ip),
            "{name}: {ip} is not from the pod CIDR"
        );
    }

    // 2. The Service's EndpointSlice lists both, ready.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    wait("an EndpointSlice with both pod IPs ready", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=echo"))
            .await?;
        let listed: BTreeSet<Ipv4Addr> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.iter().filter_map(|a| a.parse().ok()))
            .collect();
        Ok((listed == ips).then_some(()))
    })
    .await?;

    // 3. Each pod's echo-basic answers on its own IP, naming itself.
    for (name, ip, _) in &ready {
        let body = http_get_json(SocketAddr::from((*ip, 3000)), "/").await?;
        assert_eq!(body["pod"], json!(name), "echo-basic at {ip}: {body}");
        assert_eq!(body["namespace"], json!(NS), "echo-basic at {ip}: {body}");
    }

    // 4. Pod logs through the API server, which reads them from the agent's kubelet API.
    let (name, ip, _) = &ready[0];
    check_logs(&pods, kubectl, name, SocketAddr::from((*ip, 3000))).await?;

    // 5. An image the agent cannot map shows why in the Pod's status, and the agent goes on.
    let bad: Pod = serde_json::from_value(json!({
        "metadata": { "name": "unknown-image", "namespace": NS },
        "spec": { "containers": [{ "name": "c", "image": "example.invalid/not-mapped:1" }] }
    }))?;
    pods.create(&pp, &bad).await?;
    wait("ErrImagePull on the unknown image", || async {
        let p = pods.get("unknown-image").await?;
        let reason = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .and_then(|c| c.state)
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason);
        Ok((reason.as_deref() == Some("ErrImagePull")).then_some(()))
    })
    .await?;

    // 6. Deleting the Deployment removes the pods, their processes and their namespaces.
    deployments.delete("echo", &DeleteParams::background()).await?;
    pods.delete("unknown-image", &DeleteParams::default()).await?;
    wait("all pods gone", || async {
        Ok(pods
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    for (name, _, pid) in &ready {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty(), "{name}: process {pid} still exists: {stat}");
    }
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("gantry-rigtest-") && l.contains("-pod-"))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "pod network namespaces left: {left:?}");
    Ok(())
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 500 ms until it yields a value, for at most `WAIT`.
async fn wait<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + WAIT;
    let mut last = String::from("not checked");
    while Instant::now() < deadline {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "condition not met".into(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!(
        "timed out after {}s waiting for {what} (last: {last})",
        WAIT.as_secs()
    )
}

/// A plain HTTP/1.1 GET of `path` with a body that is one JSON object (echo-basic's answer).
async fn http_get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP header end: {text:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {addr}: {head}");
        }
        let (start, end) = (body.find('{'), body.rfind('}'));
        let json = match (start, end) {
            (Some(s), Some(e)) if s < e => &body[s..=e],
            _ => bail!("GET {addr}: no JSON body: {body:?}"),
        };
        Ok::<_, anyhow::Error>(serde_json::from_str(json)?)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow!("GET {addr} timed out"))?
}

/// kubectl from the control plane folder, run on the calling thread (so inside the rig's
/// network namespace, like the API server it talks to).
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl -n NS ARGS`; stdout on success, an error with stderr otherwise.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout=20s", "-n", NS])
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// echo-basic prints this line for every request it answers (conformance/echo-basic), and the
/// suite's mirror tests look for it in the backends' logs (utils/http/mirror.go).
fn echo_log_line(path: &str) -> String {
    format!("Echoing back request made to {path} to client")
}

/// `kubectl logs` of `pod` (its echo-basic at `addr`): the API server's `pods/log`, served from
/// the agent's kubelet API. Checks the options the suite and people use.
async fn check_logs(pods: &Api<Pod>, kubectl: &Kubectl, pod: &str, addr: SocketAddr) -> Result<()> {
    let first = "/logs-probe-before";
    http_get_json(addr, first).await?;
    let all = wait("the first request in kubectl logs", || async {
        let out = kubectl.run(&["logs", pod])?;
        Ok(out.contains(&echo_log_line(first)).then_some(out))
    })
    .await?;
    assert!(
        all.contains("Starting server, listening on port"),
        "echo-basic's start-up lines: {all}"
    );

    // --since-time has a resolution of seconds: take a whole second strictly after the request.
    std::thread::sleep(Duration::from_millis(1100));
    let since = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())?;
    let second = "/logs-probe-after";
    http_get_json(addr, second).await?;
    let since_arg = format!("--since-time={since}");
    let recent = wait("the second request in kubectl logs --since-time", || async {
        let out = kubectl.run(&["logs", pod, &since_arg])?;
        Ok(out.contains(&echo_log_line(second)).then_some(out))
    })
    .await?;
    assert!(
        !recent.contains(&echo_log_line(first)),
        "{since_arg} must leave out the earlier request: {recent}"
    );
    assert!(
        !recent.contains("Starting server"),
        "{since_arg} must leave out the start-up lines: {recent}"
    );

    // --timestamps: every line starts with an RFC 3339 time, at or after --since-time.
    let stamped = kubectl.run(&["logs", pod, "--timestamps", &since_arg])?;
    assert!(!stamped.trim().is_empty(), "no lines with --timestamps");
    for line in stamped.lines() {
        let (time, rest) = line
            .split_once(' ')
            .ok_or_else(|| anyhow!("no timestamp in {line:?}"))?;
        let time: jiff::Timestamp = time.parse().with_context(|| format!("timestamp of {line:?}"))?;
        assert!(time >= since, "{line:?} is before {since}");
        assert!(!rest.is_empty(), "{line:?}");
    }

    // --tail=1: the last line only.
    let tail = kubectl.run(&["logs", pod, "--tail=1"])?;
    assert_eq!(tail.lines().count(), 1, "--tail=1 gave {tail:?}");
    assert!(tail.contains(&echo_log_line(second)), "--tail=1 gave {tail:?}");

    // --limit-bytes cuts the output.
    let limited = kubectl.run(&["logs", pod, "--limit-bytes=10"])?;
    assert_eq!(limited.len(), 10, "--limit-bytes=10 gave {limited:?}");

    // A container the Pod does not have is an error (the API server checks the name itself).
    let err = kubectl
        .run(&["logs", pod, "-c", "no-such-container"])
        .expect_err("logs of a missing container");
    assert!(
        format!("{err:#}").contains("no-such-container"),
        "unexpected error: {err:#}"
    );
    // previous=true is refused by the agent, and its message reaches the client.
    let err = pods
        .logs(
            pod,
            &kube::api::LogParams {
                previous: true,
                ..kube::api::LogParams::default()
            },
        )
        .await
        .expect_err("previous=true");
    assert!(
        format!("{err:#}").contains("previous=true is not supported"),
        "unexpected error: {err:#}"
    );

    // follow=true streams what comes later.
    let third = "/logs-probe-followed";
    let stream = pods
        .log_stream(
            pod,
            &kube::api::LogParams {
                follow: true,
                since_seconds: Some(1),
                ..kube::api::LogParams::default()
            },
        )
        .await?;
    let mut lines = futures_util::AsyncBufReadExt::lines(stream);
    // The stream is open: the agent answers at once, before new entries exist.
    tokio::time::sleep(Duration::from_millis(300)).await;
    http_get_json(addr, third).await?;
    let followed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = futures_util::StreamExt::next(&mut lines).await {
            if line?.contains(&echo_log_line(third)) {
                return Ok(());
            }
        }
        bail!("the followed log ended before the third request showed")
    })
    .await;
    followed.map_err(|_| anyhow!("the followed log did not show the third request within 20 s"))??;
    drop(lines);

    // The kubelet API itself: unknown pods and containers are 404 with a message.
    for (path, want) in [
        (format!("/containerLogs/{NS}/no-such-pod/echo"), "not found"),
        (
            format!("/containerLogs/{NS}/{pod}/no-such-container"),
            "container \"no-such-container\" not found",
        ),
    ] {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("https://10.124.0.1:10250{path}"))
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.ends_with("\n404") && text.contains(want),
            "GET {path}: {text:?} (stderr {})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
