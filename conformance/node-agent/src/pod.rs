//! From a Pod object to what the runtime needs (environment, arguments, volumes), readiness
//! checks, and the Pod status the agent reports.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime::Mount;

/// A bound on each readiness probe; Kubernetes' default probe timeout is 1 s too.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pod's identity as environment references (`fieldRef`) see it.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub node_name: &'a str,
}

impl PodFacts<'_> {
    fn field(&self, path: &str) -> Result<String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
        };
        if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
            return Ok(v);
        }
        if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
            return Ok(v);
        }
        Ok(match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => self.node_name.to_string(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" | "status.podIPs" => self.pod_ip.to_string(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.to_string(),
            other => bail!("fieldRef {other:?} is not supported by the node agent"),
        })
    }
}

/// The container's environment, resolved like the kubelet does for the parts the rig needs:
/// literal values with `$(VAR)` references, `fieldRef`, `secretKeyRef`, `configMapKeyRef`, and
/// `envFrom`. A missing required Secret/ConfigMap is an error (the caller retries later).
pub async fn container_env(
    client: &Client,
    facts: &PodFacts<'_>,
    container: &Container,
) -> Result<BTreeMap<String, String>> {
    let ns = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = BTreeMap::new();
    env.insert(
        "HOSTNAME".to_string(),
        facts.pod.metadata.name.clone().unwrap_or_default(),
    );
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            config_map_data(client, ns, &r.name, r.optional.unwrap_or(false)).await?
        } else if let Some(r) = &from.secret_ref {
            secret_data(client, ns, &r.name, r.optional.unwrap_or(false)).await?
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            env.insert(format!("{prefix}{k}"), v);
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                facts.field(&f.field_path)?
            } else if let Some(s) = &from.secret_key_ref {
                let data = secret_data(client, ns, &s.name, s.optional.unwrap_or(false)).await?;
                lookup_key(data, &s.key, "Secret", &s.name, s.optional)?
            } else if let Some(c) = &from.config_map_key_ref {
                let data = config_map_data(client, ns, &c.name, c.optional.unwrap_or(false)).await?;
                lookup_key(data, &c.key, "ConfigMap", &c.name, c.optional)?
            } else {
                // resourceFieldRef: there are no resource limits here; an empty value is honest.
                String::new()
            }
        } else {
            expand(var.value.as_deref().unwrap_or_default(), &env)
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

fn lookup_key(
    data: BTreeMap<String, String>,
    key: &str,
    kind: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<String> {
    match data.get(key) {
        Some(v) => Ok(v.clone()),
        None if optional.unwrap_or(false) => Ok(String::new()),
        None => bail!("{kind} {name:?} has no key {key:?}"),
    }
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(s) => {
            let mut out: BTreeMap<String, String> = s.string_data.unwrap_or_default();
            for (k, v) in s.data.unwrap_or_default() {
                out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            Ok(out)
        }
        None if optional => Ok(BTreeMap::new()),
        None => bail!("Secret {ns}/{name} not found"),
    }
}

async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(c) => {
            let mut out = c.data.unwrap_or_default();
            for (k, v) in c.binary_data.unwrap_or_default() {
                out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            Ok(out)
        }
        None if optional => Ok(BTreeMap::new()),
        None => bail!("ConfigMap {ns}/{name} not found"),
    }
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, anything else
/// stays as written.
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if env.contains_key(&inner[..end]) => {
                    out.push_str(&env[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The process's arguments. The image's binary always runs (image paths mean nothing here), so a
/// `command` only contributes its arguments after the first word, followed by `args`.
pub fn container_args(container: &Container, env: &BTreeMap<String, String>) -> Vec<String> {
    let command = container.command.iter().flatten().skip(1);
    command
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, env))
        .collect()
}

/// Writes Secret, ConfigMap and emptyDir volumes under `dir` (one folder each) and returns the
/// container's mounts of them. Other volume kinds are skipped: the projected service-account
/// token, for one, is not needed by any process the rig runs.
pub async fn volumes(client: &Client, pod: &Pod, container: &Container, dir: &Path) -> Result<Vec<Mount>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut made: BTreeMap<String, PathBuf> = BTreeMap::new();
    let wanted: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if !wanted.contains(&vol.name.as_str()) {
            continue;
        }
        let vdir = dir.join(sanitize(&vol.name));
        let (data, items) = if let Some(s) = &vol.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = secret_data(client, ns, &name, s.optional.unwrap_or(false)).await?;
            (data, s.items.clone())
        } else if let Some(c) = &vol.config_map {
            let data = config_map_data(client, ns, &c.name, c.optional.unwrap_or(false)).await?;
            (data, c.items.clone())
        } else if vol.empty_dir.is_some() {
            (BTreeMap::new(), None)
        } else if let Some(h) = &vol.host_path {
            made.insert(vol.name.clone(), PathBuf::from(&h.path));
            continue;
        } else {
            tracing::debug!(volume = %vol.name, "volume kind not materialized by the node agent");
            continue;
        };
        // Rewritten on every start so a restarted container sees current data.
        let _ = std::fs::remove_dir_all(&vdir);
        std::fs::create_dir_all(&vdir).with_context(|| format!("creating {}", vdir.display()))?;
        let files: Vec<(String, String)> = match items {
            Some(items) => items.into_iter().map(|i| (i.key, i.path)).collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in files {
            let Some(value) = data.get(&key) else {
                bail!("volume {:?}: key {key:?} not found", vol.name);
            };
            if path.split('/').any(|p| p == ".." || p.is_empty()) {
                bail!(
                    "volume {:?}: item path {path:?} is not a plain relative path",
                    vol.name
                );
            }
            let file = vdir.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, value).with_context(|| format!("writing {}", file.display()))?;
        }
        made.insert(vol.name.clone(), vdir);
    }
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(source) = made.get(&m.name) else {
            continue;
        };
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => source.join(sub),
            None => source.clone(),
        };
        mounts.push(Mount {
            source,
            target: m.mount_path.clone(),
        });
    }
    Ok(mounts)
}

/// A file-system-safe form of a Kubernetes name (they already are; this guards odd input).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One readiness check of a running container at `ip`:
/// * a readiness probe: `tcpSocket` and `grpc` by TCP connect, `httpGet` by a GET answered with
///   2xx/3xx (plain HTTP only), `exec` is not run here and counts as passing;
/// * else the container's declared TCP ports must all accept connections;
/// * else the process must hold a listening socket (`runtime::has_listener`).
pub async fn ready(container: &Container, ip: Ipv4Addr, pid: u32) -> bool {
    if let Some(probe) = &container.readiness_probe {
        return probe_once(probe, container, ip).await.is_ok();
    }
    let ports: Vec<u16> = container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    if !ports.is_empty() {
        for port in ports {
            if tcp_connect(ip, port).await.is_err() {
                return false;
            }
        }
        return true;
    }
    crate::runtime::has_listener(pid)
}

async fn probe_once(probe: &Probe, container: &Container, ip: Ipv4Addr) -> Result<()> {
    if let Some(tcp) = &probe.tcp_socket {
        tcp_connect(ip, port_of(&tcp.port, container)?).await?;
        return Ok(());
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| anyhow!("bad grpc probe port"))?;
        tcp_connect(ip, port).await?;
        return Ok(());
    }
    if let Some(http) = &probe.http_get {
        let port = port_of(&http.port, container)?;
        let path = http.path.as_deref().unwrap_or("/");
        return http_get(ip, port, path).await;
    }
    Ok(())
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| anyhow!("port {p} out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| anyhow!("no container port named {name:?}")),
    }
}

async fn tcp_connect(ip: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let addr = SocketAddr::from((ip, port));
    Ok(tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await??)
}

async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Result<()> {
    let work = async {
        let mut s = tcp_connect(ip, port).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no HTTP status line"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            bail!("HTTP {code}")
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT * 2, work).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn command_tail_then_args() {
        let c = Container {
            command: Some(vec!["/coredns".into(), "-x".into()]),
            args: Some(vec!["-conf".into(), "$(F)".into()]),
            ..Container::default()
        };
        let env = BTreeMap::from([("F".to_string(), "/root/Corefile".to_string())]);
        assert_eq!(container_args(&c, &env), ["-x", "-conf", "/root/Corefile"]);
    }
}
