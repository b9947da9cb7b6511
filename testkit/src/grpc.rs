//! A real gRPC backend: tonic's health service, which needs no proto of ours.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::server::HealthReporter;

/// tonic's gRPC health service ("" serving) on 127.0.0.1, in cleartext or with TLS (`(cert, key)`
/// PEM); the reporter changes what it answers. It runs until the test's runtime ends.
pub async fn health_backend(tls: Option<(&str, &str)>) -> (SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .unwrap();
    }
    let router = builder.add_service(service);
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    (addr, reporter)
}
