//! Shared pieces of the end-to-end tests: the real `gantry` binary on loopback ports, real backend
//! servers, and clients.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    io::Write,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `gantry` binary, running on free loopback ports and killed when dropped.
pub struct Gantry {
    pub child: Option<Child>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Gantry {
    /// Starts gantry on `dir` with extra flags and waits until `/readyz` is 200 (at most 20 s).
    ///
    /// The ports are free when chosen but not reserved, so a test running beside this one may take
    /// one first: a gantry that exits because an address is in use is started again on new ports
    /// (at most 3 times).
    pub async fn start(dir: &Path, extra: &[&str]) -> Gantry {
        for _ in 0..3 {
            let mut g = Self::spawn(dir, extra);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if g.is_ready().await {
                    return g;
                }
                let exited = g
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited && g.log_text().contains("Address already in use") {
                    break;
                }
                if exited || Instant::now() >= deadline {
                    panic!("gantry not ready within 20 s; log:\n{}", g.log_text());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("gantry found its ports taken three times in a row");
    }

    async fn is_ready(&self) -> bool {
        plain_client()
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    pub fn spawn(dir: &Path, extra: &[&str]) -> Gantry {
        let (http, https, admin) = (free_port(), free_port(), free_port());
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
        let log = dir.with_extension("gantry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("--manifests")
            .arg(dir)
            .args(["--http-addr", &addr(http).to_string()])
            .args(["--https-addr", &addr(https).to_string()])
            .args(["--admin-addr", &addr(admin).to_string()])
            .args(extra)
            .env("GANTRY_LOG", "info")
            .env_remove("GANTRY_MANIFESTS")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start gantry");
        Gantry {
            child: Some(child),
            http: addr(http),
            https: addr(https),
            admin: addr(admin),
            dir: dir.into(),
            log,
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = plain_client()
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gantry not ready within 20 s; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `/debug/routes` as JSON.
    pub async fn routes(&self) -> serde_json::Value {
        plain_client()
            .get(format!("http://{}/debug/routes", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The value of one metric sample, `name` with its labels exactly as exposed
    /// (`gantry_upstream_retries_total{reason="connect_error"}`); 0 when it is not there.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = plain_client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn generation(&self) -> u64 {
        self.routes().await["generation"].as_u64().unwrap()
    }

    /// Waits until `/debug/routes` satisfies `f` (at most 10 s).
    pub async fn wait_routes(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if f(&self.routes().await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "routes never showed {what}: {:#}\nlog:\n{}",
            self.routes().await,
            self.log_text()
        );
    }

    pub fn sigterm(&self) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Waits for the process to exit (at most `limit`) and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes a manifest file atomically (write to a hidden temp file, then rename), as a tool would.
pub fn write_manifest(dir: &Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A Service with one port and an EndpointSlice listing `addrs` (all on one port: loopback
/// backends in these tests share 127.0.0.1, so each slice lists one endpoint per port;
/// several ports need several slices).
pub fn service_yaml(name: &str, port: u16, port_name: Option<&str>, endpoints: &[SocketAddr]) -> String {
    let pn = port_name.map(|n| format!("name: {n}, ")).unwrap_or_default();
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  type: NodePort\n  ports: [{{ {pn}port: {port}, targetPort: 3000 }}]\n"
    );
    for (i, ep) in endpoints.iter().enumerate() {
        s += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: default\n  \
             labels: {{ kubernetes.io/service-name: {name} }}\naddressType: IPv4\nports: [{{ {pn}port: {} }}]\n\
             endpoints:\n  - addresses: [\"{}\"]\n    conditions: {{ ready: true }}\n",
            ep.port(),
            ep.ip()
        );
    }
    s
}

/// A backend server answering with JSON that names it; `/sleep/MS` waits first, `/bytes/N` sends N
/// bytes, `/upload` reads the whole body and reports its length, `/ws` is a WebSocket echo.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (Arc::<str>::from(name), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h) = (n.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        backend_response(n.clone(), addr, req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http1()
                        .timer(TokioTimer::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestBackend {
            name: name.into(),
            addr,
            hits,
            task,
        }
    }
}

async fn backend_response(
    name: Arc<str>,
    addr: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some((_, ms)) = path.split_once("/sleep/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some((_, n)) = path.split_once("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    if path.ends_with("/upload") {
        let body = req
            .body_mut()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Response::new(Full::new(Bytes::from(format!("{}", body.len())))));
    }
    if path.ends_with("/ws") && req.headers().contains_key("upgrade") {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .cloned()
            .unwrap_or(http::HeaderValue::from_static(""));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if msg.is_text() || msg.is_binary() {
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                } else if msg.is_close() {
                    break;
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::default())
            .unwrap();
        return Ok(resp);
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::json!(String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect();
    let body = serde_json::json!({
        "service": &*name,
        "pod": addr.to_string(),
        "path": path,
        "query": req.uri().query(),
        "method": req.method().as_str(),
        "proto": format!("{:?}", req.version()),
        "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// A plain-HTTP client with no redirects followed and no connection reuse surprises.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A client that sends `host` to `addr` (so SNI and Host are `host`), trusting any certificate and
/// reporting the one it got.
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

/// A self-signed certificate for `names` as a kubernetes.io/tls Secret manifest.
pub fn tls_secret_yaml(secret: &str, names: &[&str]) -> String {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let b64 = |s: &str| base64_encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {secret}, namespace: default }}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&c.cert.pem()),
        b64(&c.signing_key.serialize_pem())
    )
}

pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An Ingress manifest from a compact rule list: (host, path, pathType, service, port).
pub fn ingress_yaml(
    name: &str,
    annotations: &[(&str, &str)],
    rules: &[(&str, &str, &str, &str, u16)],
) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        s += "  annotations:\n";
        for (k, v) in annotations {
            s += &format!("    {k}: \"{v}\"\n");
        }
    }
    s += "spec:\n  ingressClassName: gantry\n  rules:\n";
    for (host, path, ty, svc, port) in rules {
        if host.is_empty() {
            s += "  - http:\n";
        } else {
            s += &format!("  - host: \"{host}\"\n    http:\n");
        }
        s += &format!(
            "      paths:\n      - path: {path}\n        pathType: {ty}\n        backend:\n          service: {{ name: {svc}, port: {{ number: {port} }} }}\n"
        );
    }
    s
}
