//! The soak test's in-process clients: slow downloads during the run, and the connections of the
//! two memory probes before it (slow readers that never read; idle HTTP/2 over TLS).
//!
//! All single-threaded tokio, every wait bounded: each I/O step by [`IO_TIMEOUT`], each download by
//! [`DOWNLOAD_LIMIT`], the download loops by the run's deadline (or its stop flag).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::report::{count_error, DownloadTotals};
use crate::config::LARGE_BODY;
use crate::idle::parse_head;

/// Slow downloads read this much …
pub const CHUNK: usize = 16 * 1024;
/// … every this long (1 MiB in about 3.3 s).
pub const CHUNK_EVERY: Duration = Duration::from_millis(50);
/// Longest wait for one connect, write or read.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one slow download may take.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);
/// Pause after a failed download before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `conns` clients, each downloading `path` (the 1 MiB file) over and over on one keep-alive
/// connection (a new one after an error), reading [`CHUNK`] every [`CHUNK_EVERY`], until `deadline`
/// or `stop`. A download cut off by the deadline is not an error.
pub fn slow_downloads(
    addr: SocketAddr,
    host: &str,
    path: &str,
    conns: usize,
    deadline: Instant,
    stop: &AtomicBool,
) -> DownloadTotals {
    let mut totals = DownloadTotals {
        description: format!(
            "{conns} keep-alive connections each repeating GET {path} (1 MiB), reading {} KiB every {} ms",
            CHUNK / 1024,
            CHUNK_EVERY.as_millis()
        ),
        conns,
        ..DownloadTotals::default()
    };
    match runtime() {
        Ok(rt) => {
            let clients = (0..conns).map(|_| downloader(addr, host, path, deadline, stop));
            for t in rt.block_on(join_all(clients)) {
                totals.merge(t);
            }
        }
        Err(e) => {
            totals.errors += 1;
            count_error(&mut totals.error_kinds, &format!("no runtime: {e:#}"));
        }
    }
    totals
}

enum Got {
    /// Status 200 and exactly Content-Length (1 MiB) body bytes; the byte count.
    Complete(u64),
    /// The deadline came first; the bytes read so far.
    Cut(u64),
}

async fn downloader(
    addr: SocketAddr,
    host: &str,
    path: &str,
    deadline: Instant,
    stop: &AtomicBool,
) -> DownloadTotals {
    let mut t = DownloadTotals::default();
    let over = || Instant::now() >= deadline || stop.load(Ordering::Relaxed);
    let mut kept: Option<TcpStream> = None;
    while !over() {
        let mut s = match kept.take() {
            Some(s) => s,
            None => match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    fail(&mut t, &format!("connect: {e}"));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    fail(&mut t, "connect: timed out");
                    continue;
                }
            },
        };
        match tokio::time::timeout(DOWNLOAD_LIMIT, download(&mut s, host, path, &over)).await {
            Ok(Ok(Got::Complete(n))) => {
                t.completed += 1;
                t.bytes += n;
                kept = Some(s);
            }
            Ok(Ok(Got::Cut(n))) => {
                t.bytes += n;
                break;
            }
            Ok(Err(e)) => {
                fail(&mut t, &format!("{e:#}"));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => fail(&mut t, "download took over 60 s"),
        }
    }
    t
}

fn fail(t: &mut DownloadTotals, msg: &str) {
    t.errors += 1;
    count_error(&mut t.error_kinds, msg);
}

/// One slow download on `s`: the request, the head (status 200, Content-Length 1 MiB), then the
/// body in [`CHUNK`]s.
async fn download(s: &mut TcpStream, host: &str, path: &str, over: &impl Fn() -> bool) -> Result<Got> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadtests-slow\r\n\r\n");
    tokio::time::timeout(IO_TIMEOUT, s.write_all(request.as_bytes()))
        .await
        .context("writing the request timed out")?
        .context("writing the request")?;
    let mut buf = vec![0u8; CHUNK];
    let mut head_buf = Vec::new();
    let head = loop {
        let n = tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf))
            .await
            .context("no response head within 10 s")?
            .context("reading the response head")?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        head_buf.extend_from_slice(&buf[..n]);
        if let Some(h) = parse_head(&head_buf)? {
            break h;
        }
        if head_buf.len() > 64 * 1024 {
            bail!("response head over 64 KiB");
        }
    };
    if head.status != 200 {
        bail!("status {}", head.status);
    }
    if head.chunked {
        bail!("chunked response, expected Content-Length {LARGE_BODY}");
    }
    let len = head.content_length.context("no Content-Length")? as u64;
    if len != LARGE_BODY as u64 {
        bail!("Content-Length {len}, expected {LARGE_BODY}");
    }
    let mut got = (head_buf.len() - head.body_start) as u64;
    while got < len {
        if over() {
            return Ok(Got::Cut(got));
        }
        tokio::time::sleep(CHUNK_EVERY).await;
        let want = (len - got).min(CHUNK as u64) as usize;
        let mut read = 0;
        while read < want {
            let n = tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf[..want - read]))
                .await
                .with_context(|| format!("body stalled for 10 s after {} of {len} bytes", got + read as u64))?
                .context("reading the body")?;
            if n == 0 {
                bail!(
                    "connection closed after {} of {len} body bytes",
                    got + read as u64
                );
            }
            read += n;
        }
        got += read as u64;
    }
    if got > len {
        bail!("{got} body bytes, more than Content-Length {len}");
    }
    Ok(Got::Complete(got))
}

/// A slow reader: one connection that sends `GET path` (keep-alive) and never reads.
pub async fn open_slow_reader(addr: SocketAddr, host: &str, path: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadtests-slow-reader\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .context("writing the request")?;
    Ok(s)
}

/// Reads the first bytes of each slow reader's response: how many have a `200` waiting, and the
/// first thing found on one that has not (reads at most 12 bytes each, within 2 s).
pub async fn responses_started(conns: &mut [TcpStream]) -> (u64, Option<String>) {
    const START: &[u8] = b"HTTP/1.1 200";
    let checks = conns.iter_mut().map(|s| async move {
        let mut b = [0u8; START.len()];
        match tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b)).await {
            Ok(Ok(_)) if b == START => Ok(()),
            Ok(Ok(_)) => Err(format!("response began {:?}", String::from_utf8_lossy(&b))),
            Ok(Err(e)) => Err(format!("no response: {e}")),
            Err(_) => Err("no response after the hold".to_string()),
        }
    });
    let mut ok = 0;
    let mut first = None;
    for r in join_all(checks).await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    (ok, first)
}

/// Client TLS for the probe: TLS 1.2/1.3, ALPN `h2` only, no session resumption (every connection
/// a full handshake, like a new client), and the test certificate pinned: the server must present
/// exactly it (webpki would refuse it as a root: `openssl req -x509` marks it `CA:TRUE`), and the
/// handshake signatures are verified as usual.
pub fn h2_tls_config(cert_pem: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let cert = CertificateDer::from_pem_file(cert_pem)
        .with_context(|| format!("reading the test certificate {}", cert_pem.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCert {
        cert,
        algs: provider.signature_verification_algorithms,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Accepts exactly one certificate (loopback tests against the suite's own certificate).
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// An HTTP/2 connection held open; dropping it stops its connection task (closing the socket).
pub struct H2Conn {
    send: SendRequest<Empty<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/2-over-TLS connection (SNI and `:authority` `host`) that completed `GET /` with 200 and
/// is then left idle.
pub async fn open_idle_h2(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, host: &str) -> Result<H2Conn> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        bail!("the server did not select ALPN h2");
    }
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .context("HTTP/2 handshake")?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut c = H2Conn { send, task };
    let req = hyper::Request::get(format!("https://{host}/")).body(Empty::<Bytes>::new())?;
    let resp = c.send.send_request(req).await.context("GET /")?;
    let status = resp.status();
    resp.into_body().collect().await.context("reading the body")?;
    if status != hyper::StatusCode::OK {
        bail!("GET / answered {status}");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback server that answers one request per connection with `response` and holds it.
    async fn serve(response: &'static [u8], delay: Duration) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        tokio::time::sleep(delay).await;
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn downloads_with_a_wrong_status_or_length_are_errors_and_the_deadline_is_not() {
        let rt = runtime().unwrap();
        let stop = AtomicBool::new(false);
        rt.block_on(async {
            let not_found = serve(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                Duration::ZERO,
            )
            .await;
            let t = downloader(
                not_found,
                "h",
                "/1mib",
                Instant::now() + Duration::from_millis(300),
                &stop,
            )
            .await;
            assert!(t.errors >= 1 && t.completed == 0);
            assert!(t.error_kinds.contains_key("status 404"), "{:?}", t.error_kinds);

            let short = serve(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
                Duration::ZERO,
            )
            .await;
            let t = downloader(
                short,
                "h",
                "/1mib",
                Instant::now() + Duration::from_millis(300),
                &stop,
            )
            .await;
            assert!(
                t.error_kinds.keys().any(|k| k.starts_with("Content-Length 3")),
                "{:?}",
                t.error_kinds
            );

            // A whole 1 MiB response, read slowly: cut off by the deadline, which is not an error.
            let mut full = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
            full.resize(full.len() + LARGE_BODY, b'x');
            let whole = serve(Box::leak(full.into_boxed_slice()), Duration::ZERO).await;
            let t = downloader(
                whole,
                "h",
                "/1mib",
                Instant::now() + Duration::from_millis(300),
                &stop,
            )
            .await;
            assert_eq!((t.errors, t.completed), (0, 0), "{:?}", t.error_kinds);
            // About 6 chunks in 300 ms.
            assert!(
                t.bytes >= 2 * CHUNK as u64 && t.bytes < 20 * CHUNK as u64,
                "{}",
                t.bytes
            );
        });
    }

    #[test]
    fn slow_readers_see_whether_their_response_started() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let ok = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Duration::ZERO).await;
            let silent = serve(b"", Duration::from_secs(30)).await;
            let mut conns = vec![
                open_slow_reader(ok, "h", "/1mib").await.unwrap(),
                open_slow_reader(ok, "h", "/1mib").await.unwrap(),
                open_slow_reader(silent, "h", "/1mib").await.unwrap(),
            ];
            let (started, first) = responses_started(&mut conns).await;
            assert_eq!(started, 2);
            assert!(first.unwrap().contains("no response"));
        });
    }
}
