//! Clients of Gantry's listeners, and what they can tell about the certificate they got.

use std::{net::SocketAddr, time::Duration};

/// A plain-HTTP client with no redirects followed and a 15 s timeout.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A client that sends `host` to `addr` (so SNI and Host are `host`), trusting any certificate and
/// reporting the one it got; HTTP/2 (ALPN) or HTTP/1.1 only.
pub fn tls_client(host: &str, addr: SocketAddr, http2: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(host, addr)
        .timeout(Duration::from_secs(15));
    if http2 {
        b = b.http2_prior_knowledge();
    } else {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// The DNS names in the leaf certificate a response came with.
pub fn served_cert_names(resp: &reqwest::Response) -> Vec<String> {
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    let der = info.peer_certificate().expect("peer certificate");
    cert_names(der)
}

/// The DNS names (SANs) of a DER certificate, found by scanning for the dNSName tag: enough to tell
/// test certificates apart without an X.509 parser.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i + 2 < der.len() {
        // [2] IMPLICIT IA5String dNSName: tag 0x82, short length.
        if der[i] == 0x82 {
            let len = der[i + 1] as usize;
            if len > 0 && len < 128 && i + 2 + len <= der.len() {
                let s = &der[i + 2..i + 2 + len];
                if s.iter().all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(b)) && s.contains(&b'.') {
                    names.push(String::from_utf8_lossy(s).into_owned());
                }
            }
        }
        i += 1;
    }
    names
}
