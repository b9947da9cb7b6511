//! What the data path knows about one client connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::HeaderValue;

use crate::client_auth::ClientCertSession;

/// What a request knows about the connection it came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The port the client connected to (for `X-Forwarded-Port`).
    pub local_port: u16,
    /// The address the client connected to (the socket's local address, IPv4-mapped addresses
    /// as IPv4): it chooses the route table when the snapshot has tables of their own for some
    /// addresses (Gateways with an address of their own). Unspecified until [`Self::at`].
    pub local_ip: IpAddr,
    pub tls: bool,
    /// `client`'s IP and `local_port` as header values, formatted once per connection.
    pub(crate) client_ip: HeaderValue,
    pub(crate) local_port_value: HeaderValue,
    /// What counts the connection as open (the active-connections gauge, its `--max-connections`
    /// slot). A tunnel that outlives the HTTP connection (WebSocket) holds a clone, so the
    /// connection counts until the tunnel ends.
    pub(crate) open: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
    /// What the TLS handshake learnt about the client's certificate: set on TLS connections while
    /// some host of the snapshot has client authentication (`auth-tls-secret`), `None` otherwise
    /// (and always on plain-text connections, which carry no certificate).
    pub client_cert: Option<std::sync::Arc<ClientCertSession>>,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, local_port: u16, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            client,
            local_port,
            local_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            tls,
            client_ip,
            local_port_value: HeaderValue::from(local_port),
            open: None,
            client_cert: None,
        }
    }

    /// The same connection, reached at local address `ip`.
    pub fn at(mut self, ip: IpAddr) -> Self {
        self.local_ip = ip.to_canonical();
        self
    }

    /// The same connection, counted as open while `guard` (or a clone of it) lives.
    pub fn counted_by(mut self, guard: std::sync::Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.open = Some(guard);
        self
    }
}
