//! The PROXY protocol (v1 text and v2 binary, HAProxy's spec), for Gantry behind a TCP load
//! balancer that would otherwise hide the client's address (ingress-nginx's `use-proxy-protocol`).
//!
//! When it is on, every connection must open with a PROXY header; one that does not is closed, as
//! nginx's `listen ... proxy_protocol` does, since a client that could skip the header could also
//! forge one. Parsing is the `ppp` crate's; this module only reads exactly the header's bytes off
//! the socket (never the request after it) and turns the header into the client's address.

use std::{net::SocketAddr, time::Duration};

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::{io::AsyncReadExt, net::TcpStream};

/// The longest header: v2's 16 bytes plus the largest address block with room for TLVs (v1 is at
/// most 107 bytes). A header that claims more is refused.
const MAX_HEADER: usize = 536;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header within the header read timeout")]
    Timeout,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("connection closed before the PROXY protocol header")]
    Closed,
}

/// Reads the PROXY header at the start of `stream`. Returns the client's address from it, or
/// `None` when the header says the connection is the balancer's own (v2 `LOCAL`, v1 `UNKNOWN`):
/// then the peer address stands.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    tokio::time::timeout(timeout, read(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout)?
}

async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = [0u8; MAX_HEADER];
    // Peek until the header is complete, so that not one byte after it is consumed. A header
    // split over several segments is rare (balancers send it in one write); waiting for the next
    // segment polls briefly instead of spinning.
    loop {
        let n = stream
            .peek(&mut buf)
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let (len, client) = match parse(&buf[..n]) {
            Parsed::Incomplete if n < MAX_HEADER => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            Parsed::Incomplete => return Err(ProxyHeaderError::Invalid("header too long".into())),
            Parsed::Invalid(why) => return Err(ProxyHeaderError::Invalid(why)),
            Parsed::Header { len, client } => (len, client),
        };
        stream
            .read_exact(&mut buf[..len])
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        return Ok(client);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Incomplete,
    Invalid(String),
    Header { len: usize, client: Option<SocketAddr> },
}

fn parse(bytes: &[u8]) -> Parsed {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Parsed::Header {
                len: h.header.len(),
                client,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                _ => None,
            };
            Parsed::Header { len: h.len(), client }
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(e.to_string()),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers_give_the_client_address_and_their_exact_length() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let len = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n".len();
        assert_eq!(
            parse(h),
            Parsed::Header {
                len,
                client: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        assert_eq!(
            parse(h6),
            Parsed::Header {
                len: h6.len(),
                client: Some("[2001:db8::1]:4000".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                client: None
            }
        );
    }

    #[test]
    fn v2_headers_give_the_client_address_and_local_keeps_the_peer() {
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            v2::IPv4::new([203, 0, 113, 7], [10, 0, 0, 1], 1234, 443),
        )
        .build()
        .unwrap();
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&bytes),
            Parsed::Header {
                len: header.len(),
                client: Some("203.0.113.7:1234".parse().unwrap())
            }
        );
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: local.len(),
                client: None
            }
        );
    }

    #[test]
    fn partial_headers_wait_and_other_bytes_are_refused() {
        assert_eq!(parse(b"PROXY TCP4 192.0"), Parsed::Incomplete);
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 999.0.0.1 1.1.1.1 1 2\r\n"),
            Parsed::Invalid(_)
        ));
    }
}
