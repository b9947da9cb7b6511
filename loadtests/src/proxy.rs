//! Running proxies and backends: start from a rendered topology, wait until they serve, apply
//! changes (write changed files atomically, then poke), and stop (the [`Service`] guard).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::ProxyKind;
use crate::config::{
    self, backend, gantry, gantry_gateway, haproxy, nginx, Endpoint, File, Routes, Topology, MAIN_HOST,
};
use crate::net::{fatal, http_get, local, wait_for, ws_probe};
use crate::procs::{pinned, run_bounded_with_input, signal, Pinning, Service};
use crate::scenarios::BackendKind;
use crate::setup::{GantryBin, Tools};

/// What starting any process needs.
pub struct Env<'a> {
    pub tools: &'a Tools,
    pub gantry: Option<&'a GantryBin>,
    pub pinning: &'a Pinning,
    pub self_exe: &'a Path,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub as_root: bool,
}

/// One running proxy and the topology it was last given.
pub struct ProxyInstance {
    pub kind: ProxyKind,
    pub topo: Topology,
    pub dir: PathBuf,
    service: Service,
    written: HashMap<String, String>,
    cert_pem: String,
    key_pem: String,
    /// Churn continues where the previous round stopped.
    pub churn_step: u64,
}

impl ProxyInstance {
    /// Renders `topo`, writes it under `dir`, starts the proxy pinned to the proxy CPUs.
    pub fn start(kind: ProxyKind, topo: Topology, dir: &Path, env: &Env<'_>) -> Result<ProxyInstance> {
        if kind == ProxyKind::GantryGateway {
            if let Some(why) = gantry_gateway::unsupported(&topo) {
                bail!("not offered for this scenario: {why}");
            }
        }
        fs::create_dir_all(dir.join("tmp/body"))?;
        fs::create_dir_all(dir.join("tmp/proxy"))?;
        fs::create_dir_all(dir.join("staging"))?;
        let config_dir = config_dir(kind, dir);
        fs::create_dir_all(&config_dir)?;
        let mut written = HashMap::new();
        let files = render(kind, &topo, dir, env.cert_pem, env.key_pem);
        write_changed(&mut written, files, &dir.join("staging"), &config_dir)?;
        let log = dir.join(format!("{kind}.log"));
        let cpus = &env.pinning.proxy;
        let cmd = match kind {
            ProxyKind::Nginx => {
                let mut c = pinned(cpus, &env.tools.nginx);
                c.arg("-p")
                    .arg(dir)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .arg("-c")
                    .arg(dir.join(nginx::CONF));
                c
            }
            ProxyKind::Haproxy => {
                let mut c = pinned(cpus, &env.tools.haproxy);
                c.args(["-W", "-db", "-f"])
                    .arg(dir.join(haproxy::CONF))
                    .arg("-S")
                    .arg(dir.join(haproxy::MASTER_SOCK));
                c
            }
            // The same binary and flags for both renderings of Gantry's routes.
            ProxyKind::Gantry
            | ProxyKind::GantryGateway
            | ProxyKind::GantryTrace1
            | ProxyKind::GantryTrace100 => {
                let bin = env.gantry.context("gantry is not available")?;
                let mut c = pinned(cpus, &bin.path);
                // Every gantry flag also reads GANTRY_<FLAG>: nothing from the caller's environment
                // may change the configuration under test.
                for (k, _) in std::env::vars_os() {
                    if k.to_string_lossy().starts_with("GANTRY_") {
                        c.env_remove(k);
                    }
                }
                // Warnings and errors only, like nginx's `error_log … warn`.
                c.env("GANTRY_LOG", "warn");
                c.arg("--manifests")
                    .arg(&config_dir)
                    .arg("--http-addr")
                    .arg(topo.http.to_string())
                    .arg("--https-addr")
                    .arg(topo.https.to_string())
                    .arg("--admin-addr")
                    .arg(topo.admin.to_string())
                    .env("GANTRY_WORKER_THREADS", topo.workers.to_string());
                if bin.access_log_flag {
                    c.arg("--access-log=false");
                }
                if !topo.tls_resumption {
                    c.arg("--tls-session-resumption=false");
                }
                if let Some(ratio) = kind.trace_ratio() {
                    let sink = crate::otlp_sink::addr()?;
                    c.args([
                        "--otlp-protocol",
                        "http",
                        "--tracing",
                        "--trace-sampling-ratio",
                        ratio,
                    ])
                    .arg("--otlp-endpoint")
                    .arg(format!("http://{sink}/v1/traces"));
                }
                c
            }
        };
        let service = Service::start(kind.name(), cmd, &log)?;
        Ok(ProxyInstance {
            kind,
            topo,
            dir: dir.to_path_buf(),
            service,
            written,
            cert_pem: env.cert_pem.to_string(),
            key_pem: env.key_pem.to_string(),
            churn_step: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.service.check_alive()
    }

    /// Writes the files whose text changed since the last write. Returns their names.
    pub fn write_files(&mut self) -> Result<Vec<String>> {
        let files = render(self.kind, &self.topo, &self.dir, &self.cert_pem, &self.key_pem);
        write_changed(
            &mut self.written,
            files,
            &self.dir.join("staging"),
            &config_dir(self.kind, &self.dir),
        )
    }

    /// Waits until the proxy serves the scenario's routes (and Gantry reports ready).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let step = Duration::from_millis(50);
        let t = Duration::from_secs(2);
        if self.kind.is_gantry() {
            let admin = self.topo.admin;
            let svc = &mut self.service;
            wait_for(&format!("{} /readyz", self.kind), timeout, step, || {
                svc.check_alive().map_err(fatal)?;
                Ok(http_get(admin, "localhost", "/readyz", t)?.0 == 200)
            })?;
        }
        let mut probes: Vec<(String, String)> = vec![(MAIN_HOST.into(), "/".into())];
        if let Routes::Many { hosts, paths } = self.topo.routes {
            probes.push((config::many_host(0), "/p0/x".into()));
            probes.push((config::many_host(hosts - 1), format!("/p{}/x", paths - 1)));
        }
        if let Some(h) = self.topo.churn_hosts.first() {
            probes.push((h.clone(), "/".into()));
        }
        let (http, websocket) = (self.topo.http, self.topo.websocket);
        if self.topo.ws_route.is_some() {
            let svc = &mut self.service;
            let what = format!(
                "{} serving WebSocket {}{}",
                self.kind,
                config::WS_HOST,
                config::WS_PATH
            );
            wait_for(&what, timeout, step, || {
                svc.check_alive().map_err(fatal)?;
                let status = ws_probe(http, config::WS_HOST, config::WS_PATH, t)?;
                if status != 101 {
                    bail!("WebSocket upgrade answered {status}");
                }
                Ok(true)
            })?;
        }
        for (host, path) in probes {
            let svc = &mut self.service;
            wait_for(
                &format!("{} serving {host}{path}", self.kind),
                timeout,
                step,
                || {
                    svc.check_alive().map_err(fatal)?;
                    if websocket {
                        let status = ws_probe(http, &host, "/ws", t)?;
                        if status != 101 {
                            bail!("WebSocket upgrade answered {status}");
                        }
                        return Ok(true);
                    }
                    let (status, _) = http_get(http, &host, &path, t)?;
                    if status != 200 {
                        bail!("GET {path} (Host {host}) answered {status}");
                    }
                    Ok(true)
                },
            )?;
        }
        let https = self.topo.https;
        wait_for(&format!("{} TLS listener", self.kind), timeout, step, || {
            Ok(std::net::TcpStream::connect_timeout(&https, t).is_ok())
        })
    }

    /// Applies a changed `topo.churn_hosts`.
    pub fn apply_routes(&mut self) -> Result<()> {
        self.write_files()?;
        match self.kind {
            ProxyKind::Gantry
            | ProxyKind::GantryGateway
            | ProxyKind::GantryTrace1
            | ProxyKind::GantryTrace100 => Ok(()),
            ProxyKind::Nginx => signal(self.pid(), "HUP"),
            ProxyKind::Haproxy => self.haproxy_reload(),
        }
    }

    /// Applies a changed `topo.endpoints[..].active`; `before` is the previous endpoint list.
    pub fn apply_endpoints(&mut self, before: &[Endpoint]) -> Result<()> {
        self.write_files()?;
        match self.kind {
            ProxyKind::Gantry
            | ProxyKind::GantryGateway
            | ProxyKind::GantryTrace1
            | ProxyKind::GantryTrace100 => Ok(()),
            ProxyKind::Nginx => signal(self.pid(), "HUP"),
            ProxyKind::Haproxy => {
                let cmds: Vec<String> = self
                    .topo
                    .endpoints
                    .iter()
                    .zip(before)
                    .enumerate()
                    .filter(|(_, (now, was))| now.active != was.active)
                    .map(|(i, (now, _))| {
                        let state = if now.active { "ready" } else { "maint" };
                        format!("set server be_app/{} state {state}", haproxy::server_name(i))
                    })
                    .collect();
                if cmds.is_empty() {
                    return Ok(());
                }
                let answer = unix_command(
                    &self.dir.join(haproxy::ADMIN_SOCK),
                    &format!("{}; quit", cmds.join("; ")),
                )?;
                if !answer.trim().is_empty() {
                    bail!("HAProxy runtime API: {}", answer.trim());
                }
                Ok(())
            }
        }
    }

    /// Reload through the master CLI and wait until the master reports it done. HAProxy 2.6 drops a
    /// reload requested while another is in progress (its master re-executes itself and refuses
    /// connections meanwhile), so reloads are serialized, as a controller driving HAProxy must.
    fn haproxy_reload(&self) -> Result<()> {
        let sock = self.dir.join(haproxy::MASTER_SOCK);
        let step = Duration::from_millis(5);
        let mut before = None;
        wait_for("HAProxy master CLI", Duration::from_secs(5), step, || {
            before = haproxy_reloads(&sock);
            Ok(before.is_some())
        })?;
        let before = before.unwrap_or(0);
        unix_command(&sock, "reload")?;
        wait_for("HAProxy reload", Duration::from_secs(5), step, || {
            Ok(haproxy_reloads(&sock).is_some_and(|n| n > before))
        })
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.service.log_tail(lines)
    }

    pub fn stop(self) {
        self.service.stop();
    }
}

/// Whether the server at `https` resumes TLS 1.3 sessions: `openssl s_client` saves the ticket of
/// one connection (`-sess_out`) and offers it on the next (`-sess_in`).
pub fn tls13_resumes(openssl: &Path, https: SocketAddr, dir: &Path) -> Result<bool> {
    let sess = dir.join("tls13-session.pem");
    let _ = fs::remove_file(&sess);
    let request = format!("GET / HTTP/1.1\r\nHost: {MAIN_HOST}\r\nConnection: close\r\n\r\n");
    let connect = https.to_string();
    let run = |flag: &str| -> Result<String> {
        let mut cmd = std::process::Command::new(openssl);
        cmd.args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            MAIN_HOST,
            "-tls1_3",
            "-ign_eof",
            flag,
        ])
        .arg(&sess);
        let out = run_bounded_with_input(
            "openssl s_client",
            cmd,
            Some(request.as_bytes()),
            Duration::from_secs(10),
        )?;
        Ok(out.stdout + &out.stderr)
    };
    let first = run("-sess_out")?;
    if !first.contains("New, TLSv1.3") {
        bail!("no TLS 1.3 handshake: {}", crate::procs::last_lines(&first, 3));
    }
    if !sess.is_file() {
        return Ok(false);
    }
    Ok(run("-sess_in")?.contains("Reused, TLSv1.3"))
}

/// Where the proxy reads its configuration (Gantry: the manifest directory).
fn config_dir(kind: ProxyKind, dir: &Path) -> PathBuf {
    match kind {
        ProxyKind::Gantry
        | ProxyKind::GantryGateway
        | ProxyKind::GantryTrace1
        | ProxyKind::GantryTrace100 => dir.join("manifests"),
        _ => dir.to_path_buf(),
    }
}

pub fn render(kind: ProxyKind, topo: &Topology, dir: &Path, cert_pem: &str, key_pem: &str) -> Vec<File> {
    match kind {
        ProxyKind::Nginx => nginx::files(topo, dir),
        ProxyKind::Haproxy => haproxy::files(topo, dir),
        ProxyKind::Gantry | ProxyKind::GantryTrace1 | ProxyKind::GantryTrace100 => {
            gantry::files(topo, cert_pem, key_pem)
        }
        ProxyKind::GantryGateway => gantry_gateway::files(topo, cert_pem, key_pem),
    }
}

/// Writes the files whose text differs from `written` (to `staging` first, then renamed into
/// `target`: a directory watcher never sees half a file). Returns their names.
fn write_changed(
    written: &mut HashMap<String, String>,
    files: Vec<File>,
    staging: &Path,
    target: &Path,
) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for (name, text) in files {
        if written.get(&name) == Some(&text) {
            continue;
        }
        let tmp = staging.join(&name);
        fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, target.join(&name))
            .with_context(|| format!("renaming into {}", target.display()))?;
        written.insert(name.clone(), text);
        changed.push(name);
    }
    Ok(changed)
}

/// The master's reload count from the master CLI's `show proc` (`None` while it re-executes).
fn haproxy_reloads(master_sock: &Path) -> Option<u64> {
    parse_show_proc_reloads(&unix_command(master_sock, "show proc; quit").ok()?)
}

/// The `<reloads>` column of the master line of `show proc`.
pub fn parse_show_proc_reloads(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("master"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// One command on a HAProxy CLI socket; returns the answer. End the command with `; quit` where
/// the socket would otherwise stay open for more.
fn unix_command(sock: &Path, cmd: &str) -> Result<String> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connecting {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    let _ = s.take(64 * 1024).read_to_string(&mut out);
    Ok(out)
}

/// The backend every proxy forwards to.
pub struct Backend {
    service: Service,
    /// One address per endpoint ("pod"); the same port on 127.0.0.1, .2, .3.
    pub endpoints: Vec<SocketAddr>,
    /// nginx `stub_status` address (not for the WebSocket echo backend).
    pub stub: Option<SocketAddr>,
}

impl Backend {
    pub fn start(kind: &BackendKind, dir: &Path, env: &Env<'_>) -> Result<Backend> {
        fs::create_dir_all(dir.join("www"))?;
        fs::create_dir_all(dir.join("tmp/body"))?;
        fs::create_dir_all(dir.join("tmp/proxy"))?;
        let cpus = &env.pinning.load;
        match kind {
            BackendKind::Nginx { endpoints } => {
                let ips: Vec<std::net::Ipv4Addr> = (1..=(*endpoints).clamp(1, 3) as u8)
                    .map(|i| std::net::Ipv4Addr::new(127, 0, 0, i))
                    .collect();
                let port = crate::net::free_port_on(&ips)?;
                let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::from((*ip, port))).collect();
                let sink = local(crate::net::free_port()?);
                fs::write(
                    dir.join("www").join(&backend::DOWNLOAD_PATH[1..]),
                    pseudo_random(config::LARGE_BODY),
                )?;
                fs::write(
                    dir.join(backend::CONF),
                    backend::conf(&addrs, sink, dir, env.as_root),
                )?;
                let mut cmd = pinned(cpus, &env.tools.nginx);
                cmd.arg("-p")
                    .arg(dir)
                    .arg("-e")
                    .arg(dir.join("backend-error.log"))
                    .arg("-c")
                    .arg(dir.join(backend::CONF));
                let mut service = Service::start("backend nginx", cmd, &dir.join("backend.log"))?;
                for a in &addrs {
                    wait_for(
                        &format!("backend {a}"),
                        Duration::from_secs(20),
                        Duration::from_millis(50),
                        || {
                            service.check_alive().map_err(fatal)?;
                            Ok(
                                http_get(*a, "backend", backend::STATUS_PATH, Duration::from_secs(2))?.0
                                    == 200,
                            )
                        },
                    )?;
                }
                Ok(Backend {
                    service,
                    stub: Some(addrs[0]),
                    endpoints: addrs,
                })
            }
            BackendKind::WsEcho => {
                let addr = local(crate::net::free_port()?);
                let mut cmd = pinned(cpus, env.self_exe);
                cmd.args(["ws-echo", "--addr", &addr.to_string()]);
                let mut service = Service::start("ws echo backend", cmd, &dir.join("ws-echo.log"))?;
                wait_for(
                    "ws echo backend",
                    Duration::from_secs(20),
                    Duration::from_millis(50),
                    || {
                        service.check_alive().map_err(fatal)?;
                        Ok(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
                    },
                )?;
                Ok(Backend {
                    service,
                    endpoints: vec![addr],
                    stub: None,
                })
            }
        }
    }

    /// Connections the backend has accepted so far (nginx `stub_status`), our own probe excluded.
    pub fn accepts(&self) -> Option<u64> {
        let (status, body) = http_get(
            self.stub?,
            "backend",
            backend::STATUS_PATH,
            Duration::from_secs(2),
        )
        .ok()?;
        if status != 200 {
            return None;
        }
        backend::parse_stub_status(&body).map(|s| s.accepts.saturating_sub(1))
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.service.check_alive()
    }

    pub fn stop(self) {
        self.service.stop();
    }
}

/// Incompressible bytes for the download file (xorshift; the same file every run).
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_count_is_read_from_show_proc() {
        // HAProxy 2.6.12 master CLI, `show proc`.
        let out = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
                   25009           master          3 [failed: 0]   0d00h00m01s     2.6.12-1+deb12u4\n\
                   # workers\n\
                   25012           worker          0               0d00h00m01s     2.6.12-1+deb12u4\n\
                   # programs\n\n";
        assert_eq!(parse_show_proc_reloads(out), Some(3));
        assert_eq!(parse_show_proc_reloads(""), None);
    }

    #[test]
    fn download_file_is_exactly_one_mib_and_not_compressible_runs() {
        let data = pseudo_random(config::LARGE_BODY);
        assert_eq!(data.len(), 1 << 20);
        assert!(data.windows(8).take(1000).all(|w| w.iter().any(|b| *b != w[0])));
    }
}
