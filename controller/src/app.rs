//! Wires the pieces together: listeners, the proxy, a source, the rebuild loop, and shutdown.

use std::sync::Arc;

use gantry_proxy::{
    admin::serve_admin,
    server::{serve, tls_config, ListenerKind},
    Metrics, Proxy, Readiness, SnapshotHandle, TlsCert,
};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    cli::Args,
    runtime::{rebuild_loop, SharedStore},
    translate::TranslateOptions,
};

/// Why Gantry could not start. Once it serves, nothing stops it but a signal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value that cannot work.
    #[error("invalid settings: {0}")]
    Config(#[from] gantry_proxy::config::ConfigError),
    /// A listener address is taken or not ours.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings were refused by rustls.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The fallback certificate could not be generated.
    #[error("generating the fallback certificate: {0}")]
    Certificate(#[from] gantry_proxy::TlsError),
    /// The manifest folder cannot be read.
    #[error(transparent)]
    Files(#[from] crate::sources::files::Error),
    /// The demo could not start.
    #[error(transparent)]
    Demo(#[from] crate::demo::Error),
    /// Neither `--manifests` nor `--demo` was given, and cluster mode is not available.
    #[error("no source: give --manifests DIR or --demo")]
    NoSource,
    /// Installing the signal handlers failed.
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

async fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { what, addr, source })
}

/// Runs Gantry until SIGTERM or SIGINT, then drains and returns.
pub async fn run(args: Args) -> Result<(), Error> {
    let config = args.proxy_config()?;
    let metrics = Arc::new(Metrics::new());
    let proxy = Arc::new(Proxy::new(SnapshotHandle::default(), config, metrics));
    let readiness = Arc::new(Readiness::default());
    let opts = Arc::new(TranslateOptions {
        ingress_class: args.ingress_class.clone(),
        controller_name: args.controller_name.clone(),
        backend_mode: args.backend_mode.into(),
        default_ssl_certificate: args.default_ssl_certificate.clone(),
        fallback_certificate: TlsCert::self_signed(&["gantry.invalid"])?,
    });

    let http = bind("http", args.http_addr).await?;
    let https = bind("https", args.https_addr).await?;
    let admin = bind("admin", args.admin_addr).await?;
    let tls = tls_config(&proxy)?;

    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(Error::Signal)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (admin_shutdown_tx, admin_shutdown) = watch::channel(false);

    let shared = Arc::new(SharedStore::default());
    let source = match (&args.manifests, args.demo) {
        (Some(dir), _) => {
            Some(crate::sources::files::run(dir.clone(), shared.clone(), shutdown.clone()).await?)
        }
        (None, true) => {
            crate::demo::start(&shared).await?;
            None
        }
        (None, false) => return Err(Error::NoSource),
    };

    let rebuild = tokio::spawn(rebuild_loop(
        shared,
        proxy.clone(),
        opts,
        readiness.clone(),
        shutdown.clone(),
    ));
    let admin_task = tokio::spawn(serve_admin(
        proxy.clone(),
        readiness.clone(),
        admin,
        admin_shutdown,
    ));
    let servers = [
        tokio::spawn(serve(
            proxy.clone(),
            http,
            ListenerKind::Http,
            None,
            shutdown.clone(),
        )),
        tokio::spawn(serve(
            proxy.clone(),
            https,
            ListenerKind::Https,
            Some(tls),
            shutdown.clone(),
        )),
    ];
    tracing::info!(http = %args.http_addr, https = %args.https_addr, admin = %args.admin_addr, "gantry started");

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
    // Readiness goes first, so load balancers stop sending while the listeners close.
    readiness.set_shutting_down();
    let _ = shutdown_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    let _ = rebuild.await;
    if let Some(source) = source {
        let _ = source.await;
    }
    let _ = admin_shutdown_tx.send(true);
    let _ = admin_task.await;
    tracing::info!("drained; exiting");
    Ok(())
}
