//! The rendered manifests really route: `gantry --manifests DIR` (the workspace's debug build, or
//! `GANTRY_BIN`) is started on loopback ports with what `gantry` (Ingress) and `gantry-gateway`
//! (Gateway API) write for a many-routes topology, and must send a many-routes host/path and the
//! main host to the backend, and answer 404 for an unknown path or host. Every wait is bounded.
//!
//! Skipped (with a message) when there is no gantry binary: `cargo build -p gantry` first.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loadtests::cli::ProxyKind;
use loadtests::config::{many_host, CertFiles, Endpoint, Routes, Topology};
use loadtests::net::{free_port, http_get, local, wait_for};

const BODY: &str = "from-the-backend";

/// Answers every request with 200 and [`BODY`], one connection per request.
fn backend() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
            });
        }
    });
    addr
}

fn gantry_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GANTRY_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/gantry");
    p.is_file().then_some(p)
}

/// Kills and reaps the gantry this test started.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn topology(backend: SocketAddr, cert_dir: &Path) -> Topology {
    Topology {
        workers: 1,
        http: local(free_port().unwrap()),
        https: local(free_port().unwrap()),
        admin: local(free_port().unwrap()),
        tls_resumption: true,
        upstream_keepalive: 64,
        routes: Routes::Many { hosts: 40, paths: 10 },
        churn_hosts: Vec::new(),
        websocket: false,
        policy_mix: false,
        endpoints: vec![Endpoint {
            addr: backend,
            active: true,
        }],
        ws_route: None,
        cert: CertFiles {
            cert: cert_dir.join("cert.pem"),
            key: cert_dir.join("key.pem"),
            combined: cert_dir.join("combined.pem"),
        },
        as_root: false,
    }
}

fn serves(kind: ProxyKind, bin: &Path, base: &Path, backend: SocketAddr) {
    let dir = base.join(kind.name());
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let cert = loadtests::setup::ensure_cert(Path::new("openssl"), &base.join("certs")).unwrap();
    let (cert_pem, key_pem) = (
        std::fs::read_to_string(&cert.cert).unwrap(),
        std::fs::read_to_string(&cert.key).unwrap(),
    );
    let t = topology(backend, &base.join("certs"));
    for (name, text) in loadtests::proxy::render(kind, &t, &dir, &cert_pem, &key_pem) {
        std::fs::write(manifests.join(name), text).unwrap();
    }
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GANTRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GANTRY_LOG", "warn")
        .arg("--manifests")
        .arg(&manifests)
        .args(["--http-addr", &t.http.to_string()])
        .args(["--https-addr", &t.https.to_string()])
        .args(["--admin-addr", &t.admin.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("gantry.log")).unwrap());
    let mut g = Running(cmd.spawn().unwrap());
    let step = Duration::from_millis(50);
    let t2 = Duration::from_secs(2);
    let log = || std::fs::read_to_string(dir.join("gantry.log")).unwrap_or_default();
    let ready = wait_for(&format!("{kind} /readyz"), Duration::from_secs(60), step, || {
        if let Some(st) = g.0.try_wait()? {
            return Err(anyhow::anyhow!("gantry exited: {st}"));
        }
        Ok(http_get(t.admin, "localhost", "/readyz", t2)
            .map(|r| r.0 == 200)
            .unwrap_or(false))
    });
    if let Err(e) = ready {
        panic!("{kind}: {e:#}\n{}", log());
    }
    let host = many_host(37);
    let routed = wait_for(
        &format!("{kind} routing {host}/p7/x"),
        Duration::from_secs(30),
        step,
        || {
            Ok(http_get(t.http, &host, "/p7/x", t2)
                .map(|r| r.0 == 200)
                .unwrap_or(false))
        },
    );
    if let Err(e) = routed {
        panic!("{kind}: {e:#}\n{}", log());
    }
    for (h, p) in [
        (host.as_str(), "/p7/x"),
        (&many_host(0), "/p0"),
        ("localhost", "/any/thing"),
    ] {
        let (status, body) = http_get(t.http, h, p, t2).unwrap();
        assert_eq!(status, 200, "{kind}: {h}{p}");
        assert!(body.contains(BODY), "{kind}: {h}{p} answered {body:?}");
    }
    for (h, p) in [
        (host.as_str(), "/nope"),
        (&many_host(40), "/p0"),
        ("unknown.example", "/p0"),
    ] {
        let (status, _) = http_get(t.http, h, p, t2).unwrap();
        assert_eq!(status, 404, "{kind}: {h}{p} must not be routed");
    }
    // The TLS listener is up (the Gateway's HTTPS listener, the Ingress's tls section).
    std::net::TcpStream::connect_timeout(&t.https, t2).unwrap();
    drop(g);
}

#[test]
fn gantry_serves_ingress_and_gateway_api_renderings_alike() {
    // `cargo test --workspace` builds the binary before any test runs; a missing one is a failure,
    // not a skip, so that this test can never pass without having served anything.
    let Some(bin) = gantry_bin() else {
        panic!("no gantry binary: run `cargo build -p gantry` first, or set GANTRY_BIN");
    };
    let base = std::env::temp_dir().join(format!("loadtests-serves-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let backend = backend();
    for kind in [ProxyKind::Gantry, ProxyKind::GantryGateway] {
        serves(kind, &bin, &base, backend);
    }
    let _ = std::fs::remove_dir_all(&base);
}
