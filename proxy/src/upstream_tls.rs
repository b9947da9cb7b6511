//! TLS to backends: the client handshake on a fresh TCP connection, with a route's
//! [`UpstreamTls`] settings (their rustls configuration is built once and cached in the value).

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
};

use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{
    error::ProxyError,
    policy::{Alpn, UpstreamTls},
};

/// nginx's defaults (no verification, no SNI), for a TLS protocol on a route without
/// `proxy-ssl-*` settings. One value, so that every such route shares its configuration, its
/// session cache and its pooled connections.
pub fn default_tls() -> &'static Arc<UpstreamTls> {
    static DEFAULT: LazyLock<Arc<UpstreamTls>> = LazyLock::new(|| Arc::new(UpstreamTls::new()));
    &DEFAULT
}

/// The TLS handshake with the endpoint `addr` on `tcp`, offering `alpn`. A failed handshake, a
/// certificate that does not verify among them, is a connect error naming the reason (nothing was
/// sent yet, so the request may go to another endpoint).
pub async fn handshake(
    addr: SocketAddr,
    tcp: TcpStream,
    tls: &UpstreamTls,
    alpn: Alpn,
) -> Result<TlsStream<TcpStream>, ProxyError> {
    let connector = TlsConnector::from(tls.client_config(alpn));
    connector
        .connect(tls.name().clone(), tcp)
        .await
        .map_err(|e| {
            tracing::debug!(%addr, error = %e, name = tls.name().to_str().as_ref(), "upstream TLS handshake failed");
            ProxyError::Connect {
                addr,
                reason: format!("TLS handshake: {e}"),
            }
        })
}
