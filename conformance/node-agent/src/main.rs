//! gantry-node-agent: the conformance rig's stand-in for kubelet and kube-scheduler.
//!
//! The rig cannot pull container images, so this agent runs each Pod bound to its Node as local
//! processes: the container image is mapped to a binary (`--image NAME=PATH`), which runs inside a
//! network namespace of the Pod's own, wired by a veth pair to a bridge in the agent's network
//! namespace (the rig's). It also binds unscheduled Pods to its Node, since the rig runs no
//! kube-scheduler: with a single node, scheduling is just "bind", and building and running another
//! Kubernetes binary would cost minutes of build time for nothing. See conformance/README.md.

mod agent;
mod kubelet;
mod logs;
mod pod;
mod runtime;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser, Debug)]
#[command(name = "gantry-node-agent", version, about)]
struct Args {
    /// Kubeconfig to reach the API server; without it, the usual in-cluster/KUBECONFIG lookup.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of the Node this agent registers and runs Pods for.
    #[arg(long, default_value = "gantry-node")]
    node_name: String,
    /// Pod addresses come from here; the first address is the bridge's, the Node's InternalIP and
    /// the pods' gateway. Must not overlap the host's own networks.
    #[arg(long, default_value = "10.124.0.0/16")]
    pod_cidr: ipnet::Ipv4Net,
    /// The bridge created in the agent's network namespace.
    #[arg(long, default_value = "gantrybr0")]
    bridge: String,
    /// Prefix of the pods' network namespace names (`ip netns list`); namespaces with this prefix
    /// are deleted at start-up, as leftovers of an earlier agent.
    #[arg(long, default_value = "gantry-pod-")]
    netns_prefix: String,
    /// Where pods' volumes and logs are written (`<dir>/pods/<uid>/<container>.log`).
    #[arg(long)]
    state_dir: PathBuf,
    /// Image to local binary: NAME=PATH matches images whose repository is NAME or ends in /NAME.
    #[arg(long = "image", value_name = "NAME=PATH")]
    images: Vec<String>,
    /// Port of the kubelet API (HTTPS, container logs for `kubectl logs`) on the node address;
    /// published in the Node's `status.daemonEndpoints.kubeletEndpoint.port`.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // rustls cannot pick a provider by itself when both ring and aws-lc-rs are compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let images = runtime::ImageTable::parse(&args.images)?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
            kube::Client::try_from(cfg)?
        }
        None => kube::Client::try_default().await?,
    };
    let cfg = agent::Config {
        node_name: args.node_name,
        network: runtime::Network {
            cidr: args.pod_cidr.trunc(),
            bridge: args.bridge,
            netns_prefix: args.netns_prefix,
        },
        images,
        state_dir: args.state_dir,
        kubelet_port: args.kubelet_port,
    };
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    agent::Agent::new(client, cfg).run(shutdown).await
}
