//! How a Pod runs here: a network namespace with a veth pair to the node's bridge, an IP from the
//! pod CIDR, and one local process per container (the image mapped to a binary), inside that
//! namespace. Everything is done with the `ip` tool (iproute2) so the rig needs no netlink code.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use tokio::process::{Child, Command};

use crate::logs;

/// Bound on every `ip` invocation: they return in milliseconds unless the kernel is wedged.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's side of pod networking: a bridge in the agent's own network namespace (the rig's),
/// holding the first address of the pod CIDR, which is also the Node's InternalIP and every pod's
/// default gateway.
#[derive(Clone, Debug)]
pub struct Network {
    pub cidr: Ipv4Net,
    pub bridge: String,
    pub netns_prefix: String,
}

impl Network {
    pub fn gateway(&self) -> Ipv4Addr {
        // The first usable address; `hosts()` skips the network address for prefixes < 31.
        self.cidr.hosts().next().unwrap_or(self.cidr.addr())
    }

    /// Creates the bridge (idempotent) and removes namespaces a previous agent with the same
    /// prefix left behind (their processes died with it: they run with a parent-death signal).
    pub async fn setup(&self) -> Result<()> {
        let exists = ip(&["link", "show", "dev", &self.bridge]).await.is_ok();
        if !exists {
            ip(&["link", "add", &self.bridge, "type", "bridge"]).await?;
        }
        let gw = format!("{}/{}", self.gateway(), self.cidr.prefix_len());
        ip(&["addr", "replace", &gw, "dev", &self.bridge]).await?;
        ip(&["link", "set", &self.bridge, "up"]).await?;
        for ns in self.stale_namespaces().await? {
            tracing::info!(netns = %ns, "removing a pod network namespace left by an earlier agent");
            let _ = ip(&["netns", "del", &ns]).await;
        }
        Ok(())
    }

    async fn stale_namespaces(&self) -> Result<Vec<String>> {
        let out = ip(&["netns", "list"]).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.netns_prefix))
            .map(str::to_string)
            .collect())
    }

    /// The first free pod address: not the network, gateway or broadcast address.
    pub fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let gw = self.gateway();
        self.cidr.hosts().find(|a| *a != gw && !used.contains(a))
    }

    pub fn netns_name(&self, pod_ip: Ipv4Addr) -> String {
        let [a, b, c, d] = pod_ip.octets();
        format!("{}{a}-{b}-{c}-{d}", self.netns_prefix)
    }

    /// Creates the pod's namespace with `eth0` holding `pod_ip`, routed via the bridge.
    pub async fn add_pod(&self, pod_ip: Ipv4Addr) -> Result<String> {
        let ns = self.netns_name(pod_ip);
        // Interface names are limited to 15 bytes; the address in hex is unique per pod.
        let host_if = format!("gv{:08x}", u32::from(pod_ip));
        let addr = format!("{pod_ip}/{}", self.cidr.prefix_len());
        let gw = self.gateway().to_string();
        // Leftovers of an interrupted attempt for the same address go first.
        let _ = ip(&["netns", "del", &ns]).await;
        let _ = ip(&["link", "del", &host_if]).await;
        let steps: [&[&str]; 7] = [
            &["netns", "add", &ns],
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
            &["link", "set", &host_if, "master", &self.bridge, "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
            &["-n", &ns, "addr", "add", &addr, "dev", "eth0"],
            &["-n", &ns, "link", "set", "eth0", "up"],
            &["-n", &ns, "route", "add", "default", "via", &gw],
        ];
        for step in steps {
            if let Err(e) = ip(step).await {
                let _ = self.remove_pod(&ns).await;
                return Err(e);
            }
        }
        Ok(ns)
    }

    /// Deleting the namespace destroys `eth0` and with it the veth peer on the bridge.
    pub async fn remove_pod(&self, ns: &str) -> Result<()> {
        ip(&["netns", "del", ns]).await.map(|_| ())
    }
}

/// Runs `ip ARGS`, bounded in time; returns stdout or an error with stderr.
async fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(IP_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("ip {} timed out", args.join(" ")))?
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Image → local binary. An entry `NAME=PATH` matches an image whose repository (the part before
/// `:tag` / `@digest`) is `NAME` or ends with `/NAME`, so `echo-basic=/x/echo-basic` covers both
/// `registry.k8s.io/gateway-api/echo-basic:v1.5.1` and `gcr.io/k8s-staging-gateway-api/echo-basic:…`.
#[derive(Clone, Debug, Default)]
pub struct ImageTable {
    entries: Vec<(String, PathBuf)>,
}

impl ImageTable {
    pub fn parse(specs: &[String]) -> Result<ImageTable> {
        let mut entries = Vec::new();
        for spec in specs {
            let Some((name, path)) = spec.split_once('=') else {
                bail!("--image {spec:?}: expected NAME=PATH");
            };
            if name.is_empty() || path.is_empty() {
                bail!("--image {spec:?}: NAME and PATH must not be empty");
            }
            entries.push((name.to_string(), PathBuf::from(path)));
        }
        Ok(ImageTable { entries })
    }

    pub fn resolve(&self, image: &str) -> Option<&Path> {
        let repo = repository(image);
        self.entries
            .iter()
            .find(|(name, _)| repo == name || repo.ends_with(&format!("/{name}")))
            .map(|(_, path)| path.as_path())
    }
}

/// `registry:5000/a/b:tag@sha256:…` → `registry:5000/a/b`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        // A colon after the last slash starts the tag; one before it belongs to a registry port.
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// A directory bind-mounted into the container's view of the file system.
#[derive(Clone, Debug)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
}

/// What is needed to start one container process.
#[derive(Clone, Debug)]
pub struct Launch {
    pub netns: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub workdir: PathBuf,
    pub log: PathBuf,
}

/// Starts the process: `setpriv --pdeathsig KILL` (it dies with the agent), `ip netns exec`
/// (the pod's network namespace; ip also gives it a private mount namespace), and, when there are
/// volumes, a `sh` that bind-mounts them there before exec'ing the binary. The process leads its
/// own process group so that `kill` reaches anything it forks. Each step execs the next, so the
/// returned child's pid is the container's. Its stdout and stderr are pipes, read by a task of
/// their own ([`logs::capture`]) that appends CRI log entries to `launch.log`.
pub fn spawn(launch: &Launch) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("opening {}", launch.log.display()))?;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--", "ip", "netns", "exec", &launch.netns]);
    if !launch.mounts.is_empty() {
        // The binary is opened before mounting and run through that descriptor: a volume may
        // be mounted over the folder it lives in (the suite's CoreDNS mounts one on /root).
        let mut script = String::from("set -e\nexec 3<\"$1\"\nshift\n");
        for m in &launch.mounts {
            let (src, dst) = (quote(&m.source.display().to_string()), quote(&m.target));
            // A file (subPath) needs a file to be mounted on, a folder a folder.
            script.push_str(&format!(
                "if [ -d {src} ]; then mkdir -p {dst}; else mkdir -p \"$(dirname {dst})\"; [ -e {dst} ] || : > {dst}; fi\nmount --bind {src} {dst}\n"
            ));
        }
        script.push_str("exec /proc/self/fd/3 \"$@\"\n");
        cmd.args(["sh", "-c", &script, "sh"]);
    }
    cmd.arg(&launch.binary)
        .args(&launch.args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(&launch.env)
        .current_dir(&launch.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", launch.binary.display()))?;
    // Both were requested as pipes; on an error the dropped child is killed.
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    // Ends when both pipes close: the process group is gone (or closed them).
    tokio::spawn(logs::capture(stdout, stderr, tokio::fs::File::from_std(log)));
    Ok(child)
}

/// SIGKILLs the process group led by `child` and reaps the child, bounded in time.
pub async fn kill(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

/// Whether the process has any listening TCP socket or bound UDP socket, read from
/// `/proc/<pid>/net/*`, which shows the process's own network namespace. Used as readiness for
/// containers that declare neither ports nor a probe (the conformance backends declare none).
pub fn has_listener(pid: u32) -> bool {
    let listening = |file: &str, state: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).is_ok_and(|text| {
            text.lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(3) == Some(state))
        })
    };
    // TCP state 0A is LISTEN; a bound UDP socket shows 07 (CLOSE).
    listening("tcp", "0A") || listening("tcp6", "0A") || listening("udp", "07") || listening("udp6", "07")
}

/// Single-quotes a word for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_ignores_tag_digest_and_port() {
        assert_eq!(
            repository("registry.k8s.io/gateway-api/echo-basic:v1.5.1"),
            "registry.k8s.io/gateway-api/echo-basic"
        );
        assert_eq!(
            repository("localhost:5000/echo-basic"),
            "localhost:5000/echo-basic"
        );
        assert_eq!(repository("a/b:1@sha256:abc"), "a/b");
        assert_eq!(repository("echo-basic"), "echo-basic");
    }

    #[test]
    fn image_table_matches_last_path_segments() {
        let table = ImageTable::parse(&["echo-basic=/bin/echo-basic".into()]).expect("valid");
        assert!(table
            .resolve("gcr.io/k8s-staging-gateway-api/echo-basic:v20240412")
            .is_some());
        assert!(table
            .resolve("registry.k8s.io/gateway-api/echo-basic:v1.5.1")
            .is_some());
        assert!(table
            .resolve("registry.k8s.io/gateway-api/not-echo-basic:v1")
            .is_none());
        assert!(table.resolve("").is_none());
        assert!(ImageTable::parse(&["nothing".into()]).is_err());
    }

    #[test]
    fn allocation_skips_gateway_and_used() {
        let net = Network {
            cidr: "10.124.0.0/30".parse().expect("cidr"),
            bridge: "b".into(),
            netns_prefix: "p-".into(),
        };
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 124, 0, 1));
        let mut used = HashSet::new();
        assert_eq!(net.allocate(&used), Some(Ipv4Addr::new(10, 124, 0, 2)));
        used.insert(Ipv4Addr::new(10, 124, 0, 2));
        assert_eq!(net.allocate(&used), None);
        assert_eq!(net.netns_name(Ipv4Addr::new(10, 124, 0, 2)), "p-10-124-0-2");
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
    }
}
