//! The edge, tried as an attacker would: raw bytes on sockets and over TLS, against the real
//! `gantry` binary and backends that record what reaches them.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use gantry_testkit::{gantry, objects::*, *};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A backend of raw bytes. For every connection it counts the accept, reads one request head,
/// sends it on the channel, then writes `answer` in parts with the given pauses between them.
struct RawBackend {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    heads: tokio::sync::mpsc::UnboundedReceiver<String>,
}

async fn raw_backend(answer: Vec<(Duration, &'static [u8])>) -> RawBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let counted = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).to_lowercase());
                for (pause, bytes) in answer {
                    tokio::time::sleep(pause).await;
                    if s.write_all(bytes).await.is_err() {
                        return;
                    }
                }
                // Hold the connection open a little, as a live backend would.
                tokio::time::sleep(Duration::from_millis(300)).await;
            });
        }
    });
    RawBackend { addr, accepts, heads }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Gantry serving every host and path from `backend`, with TLS for `i.example`.
async fn gantry_for(backend: SocketAddr, flags: &[&str]) -> (Gantry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "all.yaml",
        &(service_yaml("b", 80, None, &[backend])
            + "---\n"
            + &ingress_yaml(
                "b",
                &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
                &[("", "/", "Prefix", "b", 80)],
            )
            + "---\n"
            + &tls_secret_yaml("i-tls", &["i.example"])
            + "---\n"
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: { name: t, namespace: default }\n\
               spec:\n  ingressClassName: gantry\n  tls: [{ hosts: [i.example], secretName: i-tls }]\n"),
    );
    (gantry!().manifests(dir.path()).args(flags).start().await, dir)
}

/// Writes raw bytes and returns what comes back until the peer closes (at most 5 s).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> String {
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn plain(g: &Gantry, request: &[u8]) -> String {
    exchange(tokio::net::TcpStream::connect(g.http).await.unwrap(), request).await
}

/// A TLS connection to the HTTPS listener offering `alpn`, accepting any certificate.
async fn tls(g: &Gantry, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("i.example").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_h2c_upgrade_is_neither_forwarded_nor_tunnelled_on_either_listener() {
    // A backend that, like Go's h2c.NewHandler, switches to HTTP/2 whenever asked.
    let mut b = raw_backend(vec![(
        Duration::ZERO,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )])
    .await;
    let (g, _dir) = gantry_for(b.addr, &[]).await;
    let attack: &[u8] = b"GET /pub HTTP/1.1\r\nHost: i.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    for listener in ["plain", "tls"] {
        let raw = match listener {
            "plain" => plain(&g, attack).await,
            _ => exchange(tls(&g, &[b"http/1.1"]).await, attack).await,
        };
        let head = tokio::time::timeout(Duration::from_secs(5), b.heads.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(head.starts_with("get /pub http/1.1"), "{listener}: {head}");
        for forbidden in ["upgrade:", "http2-settings:", "connection: upgrade"] {
            assert!(
                !head.contains(forbidden),
                "{listener}: the backend got {forbidden:?}: {head}"
            );
        }
        // The backend's unrequested 101 is refused, never tunnelled.
        assert_eq!(status_of(&raw), 502, "{listener}: {raw}");
        assert!(!raw.contains("101"), "{listener}: {raw}");
    }
}

#[tokio::test]
async fn a_streaming_response_outlives_the_idle_timeout() {
    // Two events 1.2 s apart, three times the idle timeout.
    let b = raw_backend(vec![
        (
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
              b\r\ndata: one\n\n\r\n",
        ),
        (Duration::from_millis(1200), b"b\r\ndata: two\n\n\r\n0\r\n\r\n"),
    ])
    .await;
    let (g, _dir) = gantry_for(b.addr, &["--idle-timeout", "400ms"]).await;

    // HTTP/1.1
    let raw = plain(
        &g,
        b"GET /events HTTP/1.1\r\nHost: i.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert!(raw.contains("data: one") && raw.contains("data: two"), "{raw}");

    // HTTP/2 (prior knowledge on the plain listener): the stream and its connection survive.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("i.example", g.http)
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://i.example:{}/events", g.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .unwrap()
        .unwrap();
    assert!(body.contains("data: one") && body.contains("data: two"), "{body}");
}

#[tokio::test]
async fn malformed_chunked_bodies_are_400_before_any_upstream_connection() {
    let b = raw_backend(vec![(Duration::ZERO, OK)]).await;
    let (g, _dir) = gantry_for(b.addr, &[]).await;
    let head =
        "POST /up HTTP/1.1\r\nHost: i.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let cases: &[(&str, &str)] = &[
        ("0x prefix", "0x10\r\n0123456789abcdef\r\n0\r\n\r\n"),
        ("plus sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("negative", "-1\r\nhello\r\n0\r\n\r\n"),
        ("overflow", "ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("bare LF", "5\nhello\r\n0\r\n\r\n"),
        ("no CRLF after data", "5\r\nhelloXX0\r\n\r\n"),
    ];
    for (what, body) in cases {
        let raw = plain(&g, format!("{head}{body}").as_bytes()).await;
        assert_eq!(status_of(&raw), 400, "{what}: {raw}");
    }
    assert_eq!(
        b.accepts.load(Ordering::SeqCst),
        0,
        "no upstream connection may be opened for a malformed body"
    );
    let rejected = metric_value(&g, "gantry_rejected_requests_total").await;
    assert!(rejected >= cases.len() as f64, "{rejected}");
    // A well-formed chunked body still goes through.
    let raw = plain(&g, format!("{head}5\r\nhello\r\n0\r\n\r\n").as_bytes()).await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert_eq!(b.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transfer_encodings_other_than_one_final_chunked_are_refused() {
    let b = raw_backend(vec![(Duration::ZERO, OK)]).await;
    let (g, _dir) = gantry_for(b.addr, &[]).await;
    let cases: &[(&str, u16)] = &[
        ("identity, chunked", 501),
        ("gzip, chunked", 501),
        ("chunked, chunked", 400),
        ("chunked\r\nTransfer-Encoding: chunked", 400),
    ];
    for (te, status) in cases {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: i.example\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        );
        let raw = plain(&g, req.as_bytes()).await;
        assert_eq!(status_of(&raw), *status, "{te:?}: {raw}");
    }
    assert_eq!(b.accepts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn forwarded_is_rewritten_like_x_forwarded_for() {
    let echo = Echo::start("echo").await;
    let (g, _dir) = gantry_for(echo.addr, &[]).await;
    let resp = plain_client()
        .get(format!("http://{}/", g.http))
        .header("host", "i.example")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    let headers = &v["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        headers["forwarded"],
        "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"i.example\""
    );
}

#[tokio::test]
async fn a_connection_that_negotiated_h2_speaks_only_http2() {
    let b = raw_backend(vec![(Duration::ZERO, OK)]).await;
    let (g, _dir) = gantry_for(b.addr, &[]).await;
    let raw = exchange(
        tls(&g, &[b"h2"]).await,
        b"GET / HTTP/1.1\r\nHost: i.example\r\n\r\n",
    )
    .await;
    assert!(
        !raw.contains("HTTP/1.1"),
        "an HTTP/1.1 answer after ALPN h2: {raw:?}"
    );
    assert_eq!(b.accepts.load(Ordering::SeqCst), 0);
    // And HTTP/1.1 still works when that is what ALPN chose.
    let raw = exchange(
        tls(&g, &[b"http/1.1"]).await,
        b"GET / HTTP/1.1\r\nHost: i.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
}

#[tokio::test]
async fn the_connection_limit_refuses_new_connections_and_health_checks_still_answer() {
    let b = raw_backend(vec![(Duration::ZERO, OK)]).await;
    let (g, _dir) = gantry_for(b.addr, &["--max-connections", "2"]).await;
    let held: Vec<_> = futures_util::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(g.http)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Both held connections are counted once Gantry accepted them; the next one is closed.
    let mut refused = false;
    for _ in 0..50 {
        let mut extra = tokio::net::TcpStream::connect(g.http).await.unwrap();
        let _ = extra
            .write_all(b"GET / HTTP/1.1\r\nHost: i.example\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused, "a connection beyond the limit was served");
    assert!(metric_value(&g, "gantry_connections_refused_total").await >= 1.0);
    let health = plain_client()
        .get(format!("http://{}/healthz", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // A freed slot serves again.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        let raw = plain(
            &g,
            b"GET / HTTP/1.1\r\nHost: i.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        if status_of(&raw) == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served);
}

#[tokio::test]
async fn keep_alive_waits_are_timed_by_the_idle_timeout_and_request_heads_by_the_header_timeout() {
    let echo = Echo::start("echo").await;
    let (g, _dir) = gantry_for(
        echo.addr,
        &["--header-read-timeout", "300ms", "--idle-timeout", "3s"],
    )
    .await;
    // A keep-alive connection quiet for three header timeouts between two requests is kept.
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let mut buf = vec![0u8; 8192];
    for i in 0..2 {
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        s.write_all(b"GET / HTTP/1.1\r\nHost: i.example\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "request {i}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // A head that starts and never ends is cut by the header timeout, well before the idle timeout.
    let mut slow = tokio::net::TcpStream::connect(g.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: i.ex").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a stalled request head was not cut by --header-read-timeout"
    );
}

/// The value of a metric summed over its label sets, 0 when absent.
async fn metric_value(g: &Gantry, name: &str) -> f64 {
    let text = plain_client()
        .get(format!("http://{}/metrics", g.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Accepts any server certificate: these tests are about HTTP, not about trust.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_outlives_the_header_timeout_and_counts_as_an_open_connection() {
    use futures_util::{SinkExt, StreamExt};
    let backend = Echo::start("ws").await;
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "all.yaml",
        &(service_yaml("ws", 80, None, &[backend.addr])
            + "---\n"
            + &ingress_yaml("ws", &[], &[("ws.example", "/", "Prefix", "ws", 80)])),
    );
    // The tunnel's bytes are no request heads: a 1 s head timeout must not cut it, however long it
    // runs; only 3 s without a byte would (the idle timeout).
    let g = gantry!()
        .manifests(dir.path())
        .args(["--header-read-timeout", "1s", "--idle-timeout", "3s"])
        .start()
        .await;
    let stream = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.example/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..16 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let msg = format!("tick {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("the tunnel is open")
            .expect("a message");
        assert_eq!(echoed.into_text().unwrap().as_str(), msg);
        if i == 8 {
            // Four seconds in, well past the head timeout: the tunnel is one open connection.
            assert_eq!(metric_value(&g, "gantry_active_connections").await, 1.0);
        }
    }
    ws.close(None).await.unwrap();
    drop(ws);
    let closed = async {
        for _ in 0..50 {
            if metric_value(&g, "gantry_active_connections").await == 0.0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        closed.await,
        "the closed tunnel still counts as an open connection"
    );
}
