//! The idle-connection client (`loadtests idle-client`, started pinned by the runner).
//!
//! Opens `conns` connections, 200 at a time; on each sends one keep-alive `GET /`, reads the whole
//! response, then leaves it idle. Prints `READY {json}` once all are open, waits until stdin closes
//! (the runner has measured the proxy's memory by then) or `max_hold` passes, counts how many the
//! proxy kept open, and prints `DONE {json}`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::IdleArgs;
use crate::loadgen::percentiles3;

/// Printed after `READY `.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub opened: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Ramp-up time, seconds.
    pub elapsed_s: f64,
    /// Latency of the one request on each connection (connect included), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Printed after `DONE `.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub still_open: u64,
    pub closed_by_peer: u64,
}

const BATCH: usize = 200;
const PER_CONN_TIMEOUT: Duration = Duration::from_secs(10);
const RAMP_LIMIT: Duration = Duration::from_secs(90);

pub fn client_main(args: IdleArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Connections opened by [`open_in_batches`], and what became of the others.
pub struct Opened<C> {
    pub conns: Vec<C>,
    /// Connections that failed, timed out, or were not tried before the ramp limit.
    pub failed: u64,
    pub first_error: Option<String>,
    /// Time to open them, seconds.
    pub elapsed_s: f64,
}

/// Opens `n` connections with `open`, `batch` at a time, each within `per_conn`; the ones not
/// tried after `ramp_limit` count as failed.
pub async fn open_in_batches<C, Fut>(
    n: usize,
    batch: usize,
    per_conn: Duration,
    ramp_limit: Duration,
    open: impl Fn() -> Fut,
) -> Opened<C>
where
    Fut: std::future::Future<Output = Result<C>>,
{
    let start = Instant::now();
    let mut out = Opened {
        conns: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
        elapsed_s: 0.0,
    };
    let mut left = n;
    while left > 0 && start.elapsed() < ramp_limit {
        let k = left.min(batch.max(1));
        left -= k;
        let attempts = (0..k).map(|_| tokio::time::timeout(per_conn, open()));
        for r in join_all(attempts).await {
            match r {
                Ok(Ok(c)) => out.conns.push(c),
                Ok(Err(e)) => {
                    out.failed += 1;
                    out.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
                Err(_) => {
                    out.failed += 1;
                    out.first_error.get_or_insert_with(|| "timed out".into());
                }
            }
        }
    }
    out.failed += left as u64;
    out.elapsed_s = start.elapsed().as_secs_f64();
    out
}

async fn run(args: IdleArgs) -> Result<()> {
    let opened = open_in_batches(args.conns, BATCH, PER_CONN_TIMEOUT, RAMP_LIMIT, || {
        open_one(args.addr, &args.host)
    })
    .await;
    let (streams, mut lat_ms): (Vec<TcpStream>, Vec<f64>) = opened.conns.into_iter().unzip();
    let mut ready = Ready {
        opened: streams.len() as u64,
        failed: opened.failed,
        first_error: opened.first_error,
        elapsed_s: opened.elapsed_s,
        ..Ready::default()
    };
    (ready.p50_ms, ready.p99_ms, ready.p999_ms) = percentiles3(&mut lat_ms);
    println!("READY {}", serde_json::to_string(&ready)?);

    // Hold until the runner closes our stdin (or max_hold).
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(args.max_hold, async {
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;

    let mut done = Done::default();
    for s in &streams {
        let mut b = [0u8; 16];
        match s.try_read(&mut b) {
            Ok(0) => done.closed_by_peer += 1,
            Ok(_) => done.still_open += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => done.still_open += 1,
            Err(_) => done.closed_by_peer += 1,
        }
    }
    println!("DONE {}", serde_json::to_string(&done)?);
    Ok(())
}

async fn open_one(addr: std::net::SocketAddr, host: &str) -> Result<(TcpStream, f64)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadtests-idle\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the response was complete");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            bail!("response larger than 1 MiB");
        }
        if let Some(status) = response_complete(&buf)? {
            if !(200..400).contains(&status) {
                bail!("status {status}");
            }
            return Ok((s, t.elapsed().as_secs_f64() * 1000.0));
        }
    }
}

/// The parts of an HTTP/1.1 response head the clients need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    /// Offset of the first body byte in the buffer.
    pub body_start: usize,
}

/// `Some(head)` once `buf` holds a whole response head; `Err` when it is not HTTP.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.lines();
    let status: u16 = match lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
    {
        Some(s) => s,
        None => bail!("not an HTTP response"),
    };
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            content_length = v.parse::<usize>().ok();
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    Ok(Some(Head {
        status,
        content_length,
        chunked,
        body_start: head_end + 4,
    }))
}

/// `Some(status)` once `buf` holds a whole HTTP/1.1 response (Content-Length or chunked body).
pub fn response_complete(buf: &[u8]) -> Result<Option<u16>> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let body = &buf[head.body_start..];
    let complete = if head.chunked {
        body.ends_with(b"0\r\n\r\n")
    } else {
        body.len() >= head.content_length.unwrap_or(0)
    };
    Ok(complete.then_some(head.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_complete_by_length_or_last_chunk() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(response_complete(head).unwrap(), None);
        assert_eq!(
            response_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").unwrap(),
            Some(200)
        );
        assert_eq!(
            response_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 3").unwrap(),
            None
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n";
        assert_eq!(response_complete(chunked).unwrap(), None);
        let mut full = chunked.to_vec();
        full.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(response_complete(&full).unwrap(), Some(200));
        assert_eq!(
            response_complete(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap(),
            Some(404)
        );
        assert!(response_complete(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn heads_give_status_length_and_where_the_body_starts() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\nabc";
        let h = parse_head(buf).unwrap().unwrap();
        assert_eq!(
            (h.status, h.content_length, h.chunked),
            (200, Some(1 << 20), false)
        );
        assert_eq!(&buf[h.body_start..], b"abc");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
    }
}
