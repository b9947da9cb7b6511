//! Loopback helpers: free ports, a minimal blocking HTTP/1.1 GET for probes, bounded waiting.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A port on 127.0.0.1 that was free a moment ago (the kernel picks it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A port free on every one of `ips` at once (the endpoint-churn backends share one port on
/// 127.0.0.1, 127.0.0.2, 127.0.0.3, like pods with distinct IPs).
pub fn free_port_on(ips: &[Ipv4Addr]) -> Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        let all_free = ips
            .iter()
            .all(|ip| TcpListener::bind(SocketAddrV4::new(*ip, port)).is_ok());
        if all_free {
            return Ok(port);
        }
    }
    bail!("no port free on all of {ips:?} after 50 tries")
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One GET with `Connection: close`; returns (status, body). Bounded by `timeout` per I/O step.
pub fn http_get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: loadtests-probe\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    // Bounded: at most 4 MiB, and the read timeout ends a stalled peer.
    s.take(4 << 20)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading from {addr}"))?;
    parse_response(&buf)
}

/// Sends a WebSocket upgrade request and returns the response status (101 when upgraded).
pub fn ws_probe(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(parse_response(&buf)?.0)
}

/// Status and body of a complete `Connection: close` response (chunked bodies are returned raw).
pub fn parse_response(buf: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An error that ends [`wait_for`] at once (the process being waited for has exited).
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Wraps an error so that [`wait_for`] stops retrying.
pub fn fatal(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Fatal(format!("{e:#}")))
}

/// Polls `check` every `every` until it returns `Ok(true)`, fails with a [`Fatal`] error, or
/// `timeout` passes (then fails with the last error).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::from("condition not met");
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.downcast_ref::<Fatal>().is_some() => return Err(e.context(what.to_string())),
            Err(e) => last_err = format!("{e:#}"),
        }
        if Instant::now() >= deadline || crate::procs::interrupted() {
            bail!("{what}: not ready within {timeout:.0?} ({last_err})");
        }
        thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_split_into_status_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nok\n";
        assert_eq!(parse_response(raw).unwrap(), (200, "ok\n".to_string()));
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().0, 404);
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn fatal_errors_end_the_wait_at_once() {
        let mut calls = 0;
        let r = wait_for("x", Duration::from_secs(30), Duration::from_millis(1), || {
            calls += 1;
            if calls < 3 {
                bail!("not yet")
            }
            Err(fatal(anyhow::anyhow!("exited")))
        });
        assert!(format!("{:#}", r.unwrap_err()).contains("exited"));
        assert_eq!(calls, 3);
    }

    #[test]
    fn free_ports_can_be_bound() {
        let p = free_port().unwrap();
        assert!(p > 0);
        let ips = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        let p = free_port_on(&ips).unwrap();
        for ip in ips {
            TcpListener::bind(SocketAddrV4::new(ip, p)).unwrap();
        }
    }
}
