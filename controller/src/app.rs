//! Wires the pieces together: listeners, the proxy, a source, the rebuild loop, and shutdown.

use std::sync::Arc;

use gantry_proxy::{Dataplane, TlsCert};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::{
    cli::Args,
    metrics::Metrics,
    runtime::{rebuild_loop, Published, SharedStore},
    translate::{BackendMode, TranslateOptions},
};

/// Why Gantry could not start. Once it serves, nothing stops it but a signal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value that cannot work.
    #[error("invalid settings: {0}")]
    Config(#[from] gantry_proxy::config::ConfigError),
    /// The data plane could not start (a listener address is taken, TLS settings refused).
    #[error(transparent)]
    Dataplane(#[from] gantry_proxy::dataplane::Error),
    /// The fallback certificate could not be generated.
    #[error("generating the fallback certificate: {0}")]
    Certificate(#[from] gantry_proxy::TlsError),
    /// The manifest folder cannot be read.
    #[error(transparent)]
    Files(#[from] crate::sources::files::Error),
    /// The demo could not start.
    #[error(transparent)]
    Demo(#[from] crate::demo::Error),
    /// Cluster mode cannot reach a configuration or build a client.
    #[error(transparent)]
    Kube(#[from] crate::sources::kube::Error),
    /// Installing the signal handlers failed.
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Runs Gantry until SIGTERM or SIGINT, then drains and returns.
pub async fn run(args: Args) -> Result<(), Error> {
    let config = args.proxy_config()?;
    let workers = args
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let opts = Arc::new(TranslateOptions {
        ingress_class: args.ingress_class.clone(),
        controller_name: args.controller_name.clone(),
        backend_mode: args.backend_mode.into(),
        default_ssl_certificate: args.default_ssl_certificate.clone(),
        fallback_certificate: TlsCert::self_signed(&["gantry.invalid"])?,
        proxy_config: Arc::new(config.clone()),
        gateway: args.gateway_options(),
    });
    let shared = Arc::new(SharedStore::default());
    let mut registry = Registry::with_prefix("gantry");
    let metrics = Metrics::register(&mut registry);
    registry.register_collector(Box::new(crate::metrics::ObjectsCollector(shared.clone())));
    let (published_tx, published) = watch::channel(Published::default());
    let diagnostics = published.clone();
    let annotations = published.clone();

    // Until the first build, the data plane answers 404 with the flags' settings.
    let dataplane = Arc::new(
        Dataplane::builder(config)
            .workers(workers)
            .http(args.http_addr)
            .https(args.https_addr)
            .admin(args.admin_addr)
            .registry(registry)
            .otlp(args.otlp())
            .debug_section("diagnostics", move || {
                serde_json::to_value(&*diagnostics.borrow().diagnostics).unwrap_or_default()
            })
            .debug_section("annotations", move || {
                serde_json::to_value(&*annotations.borrow().annotations).unwrap_or_default()
            })
            .start()
            .await?,
    );

    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(Error::Signal)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    match (&args.manifests, args.demo) {
        (Some(dir), _) => {
            tasks.push(crate::sources::files::run(dir.clone(), shared.clone(), shutdown.clone()).await?)
        }
        (None, true) => crate::demo::start(&shared).await?,
        (None, false) => {
            let client = crate::sources::kube::client(args.kubeconfig.as_deref()).await?;
            tasks.extend(start_cluster(
                &args, client, &shared, &opts, &metrics, published, &shutdown,
            ));
        }
    }
    tasks.push(tokio::spawn(rebuild_loop(
        shared,
        dataplane.clone(),
        metrics,
        opts,
        published_tx,
        shutdown.clone(),
    )));
    tracing::info!(http = %dataplane.http_addr(), https = %dataplane.https_addr(), admin = %dataplane.admin_addr(), workers, "gantry started");

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
    // Readiness goes first, so load balancers stop sending while the listeners close.
    dataplane.shutdown();
    let _ = shutdown_tx.send(true);
    // Sources, the rebuild loop and the writers; the election releases the Lease here if held.
    for task in tasks {
        let _ = task.await;
    }
    dataplane.join().await;
    tracing::info!("drained; exiting");
    Ok(())
}

/// Cluster mode: the watches that fill the store, the election, and the writers (Ingress status and
/// Events) that only the leader runs. Returns their tasks; all stop when `shutdown` turns true.
fn start_cluster(
    args: &Args,
    client: kube::Client,
    shared: &Arc<SharedStore>,
    opts: &Arc<TranslateOptions>,
    metrics: &Metrics,
    published: watch::Receiver<Published>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use crate::{events, leader, sources, status};

    let settings = sources::kube::Settings {
        namespaces: args.watch_namespaces.clone(),
        nodes: opts.backend_mode == BackendMode::NodePort,
        proxy_configs: true,
        gateway_api: opts.gateway.is_some(),
        references: Some(opts.clone()),
    };
    let identity = args.identity();
    let watches = sources::kube::run(
        client.clone(),
        settings,
        shared.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let lease = leader::LeaseSettings::new(args.election_namespace(), &args.election_id, &identity);
    tracing::info!(lease = %format!("{}/{}", lease.namespace, lease.name), identity = %identity, "cluster mode");
    let (leadership, election) = leader::run(client.clone(), lease, metrics.clone(), shutdown.clone());
    let mut tasks = vec![watches, election];
    let source = match (&args.publish_service, &args.publish_status_address) {
        (Some(service), _) => Some(status::PublishSource::Service(service.clone())),
        (None, list) if !list.is_empty() => Some(status::PublishSource::Addresses(list.clone())),
        _ => None,
    };
    let addresses = source.map(|source| status::addresses(&client, source, shutdown));
    if opts.gateway.is_some() {
        tasks.push(crate::gateway::status::run(
            client.clone(),
            addresses.clone(),
            shared.clone(),
            opts.clone(),
            leadership.clone(),
            published.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(addresses) = addresses {
        tasks.push(status::run(
            client.clone(),
            addresses,
            shared.clone(),
            leadership.clone(),
            published.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let reporter = kube::runtime::events::Reporter {
        controller: args.controller_name.clone(),
        instance: Some(identity),
    };
    tasks.push(events::run(
        client,
        reporter,
        leadership,
        published,
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks
}
