//! A real Kubernetes control plane (etcd + kube-apiserver) for the cluster tests and benchmarks.
//!
//! `TestEnv::start()` runs etcd and kube-apiserver from the folder named by
//! `KUBEBUILDER_ASSETS` (or, when that is unset, from the folder that
//! `controller/testenv/build-control-plane.sh` builds and caches), each in a
//! private temporary folder, listening on free ports of 127.0.0.1 only:
//!
//! * etcd keeps its data in `<tmp>/etcd-data`, so `stop_apiserver()` followed
//!   by `start_apiserver()` brings both processes back on the same ports with
//!   the same data (and the same certificates, so existing clients reconnect).
//! * The API server serves TLS with a certificate from a CA made for this
//!   environment, authenticates clients by certificate (`--client-ca-file`),
//!   authorizes with RBAC, and knows one administrator (`gantry-envtest-admin`,
//!   group `system:masters`). `kubeconfig_path()` names a kubeconfig for it that
//!   both kube-rs and kubectl read.
//! * Service account tokens are signed with an ECDSA key made for this
//!   environment; there is no controller manager, so the `ServiceAccount`
//!   admission plugin is disabled (pods do not need a default service account).
//! * Process output goes to `<tmp>/etcd.log` and `<tmp>/kube-apiserver.log`; a
//!   failed start-up reports the tail of both.
//! * Both processes are direct children of the test process, started through
//!   `setpriv --pdeathsig KILL` from a supervisor thread that lives as long as
//!   the `TestEnv`: they are killed (and reaped) when the `TestEnv` is dropped,
//!   die with the test process if it is killed outright, and are killed when
//!   `GANTRY_ENVTEST_LIFETIME_SECS` (default 1800) have passed since `start`,
//!   whatever the test is doing then.
//!
//! Environment knobs: `KUBEBUILDER_ASSETS`, `GANTRY_ENVTEST_READY_TIMEOUT_SECS`
//! (default 90, per start), `GANTRY_ENVTEST_LIFETIME_SECS` (default 1800), and
//! `GANTRY_ENVTEST_KEEP=1` to keep the temporary folder for inspection.
//!
//! The blocking calls (`start`, `start_apiserver`) poll with `std::thread::sleep`;
//! from async code prefer `start_async` / `start_apiserver_async`, which run
//! them on tokio's blocking pool so the runtime's other tasks keep running.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Api;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const ADMIN_USER: &str = "gantry-envtest-admin";
/// How many times a start-up is retried when a port it picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 4;

/// A running etcd + kube-apiserver pair. See the module documentation.
pub struct TestEnv {
    inner: Arc<Inner>,
}

struct Inner {
    /// Deleted when dropped, which is after `Drop for Inner` killed the
    /// processes (fields drop after `drop`); `None` when kept.
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
    assets: PathBuf,
    ports: Mutex<Ports>,
    /// Whether `ports` have successfully served once; from then on they are fixed.
    ports_fixed: Mutex<bool>,
    procs: Mutex<Option<Procs>>,
    /// Spawns the processes; dropped after them (fields drop after `Drop::drop`).
    supervisor: Supervisor,
    tls: Arc<rustls::ClientConfig>,
    ready_timeout: Duration,
    /// Given by `start_with_apiserver_args`, after the defaults (a later flag wins).
    extra_apiserver_args: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

struct Procs {
    etcd: Child,
    apiserver: Child,
}

impl TestEnv {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers 200.
    /// Blocks for several seconds; see `start_async` for async callers.
    pub fn start() -> Result<TestEnv> {
        TestEnv::start_with_apiserver_args(&[])
    }

    /// `start`, with more kube-apiserver flags (they follow the defaults, so they also override
    /// them), kept across `stop_apiserver`/`start_apiserver`. E.g. `--watch-cache=false` makes
    /// watches read etcd directly, so that compacting etcd (`compact_etcd`) expires their
    /// resourceVersions.
    pub fn start_with_apiserver_args(args: &[&str]) -> Result<TestEnv> {
        let assets = assets_dir()?;
        for bin in ["etcd", "kube-apiserver"] {
            let path = assets.join(bin);
            if !path.is_file() {
                bail!(
                    "{} is missing (assets folder {})",
                    path.display(),
                    assets.display()
                );
            }
        }
        let keep = std::env::var("GANTRY_ENVTEST_KEEP").is_ok_and(|v| v == "1");
        let dir = tempfile::Builder::new().prefix("gantry-envtest-").tempdir()?;
        let root = dir.path().to_path_buf();
        let dir = if keep {
            eprintln!("envtest: keeping {}", root.display());
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        let tls = write_credentials(&root)?;
        let lifetime = env_secs("GANTRY_ENVTEST_LIFETIME_SECS", 1800);
        let inner = Arc::new(Inner {
            _dir: dir,
            root,
            assets,
            ports: Mutex::new(pick_ports()?),
            ports_fixed: Mutex::new(false),
            procs: Mutex::new(None),
            supervisor: Supervisor::new(lifetime)?,
            tls,
            ready_timeout: env_secs("GANTRY_ENVTEST_READY_TIMEOUT_SECS", 90),
            extra_apiserver_args: args.iter().map(|a| a.to_string()).collect(),
        });
        inner.start_processes()?;
        Ok(TestEnv { inner })
    }

    /// `start` on tokio's blocking pool.
    pub async fn start_async() -> Result<TestEnv> {
        tokio::task::spawn_blocking(TestEnv::start).await?
    }

    /// The temporary folder holding certificates, logs, the kubeconfig and etcd's data.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The folder with the `kube-apiserver`, `etcd` and `kubectl` binaries in use.
    pub fn assets_dir(&self) -> &Path {
        &self.inner.assets
    }

    /// `https://127.0.0.1:<port>`; stays the same across `stop_apiserver`/`start_apiserver`.
    pub fn apiserver_url(&self) -> String {
        format!("https://{LOOPBACK}:{}", self.inner.ports().apiserver)
    }

    /// `http://127.0.0.1:<port>`: etcd's client URL (plain HTTP, no authentication), which also
    /// serves etcd's v3 JSON gateway (`/v3/kv/range`, `/v3/kv/compaction`).
    pub fn etcd_url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.inner.ports().etcd_client)
    }

    /// Compacts etcd's history up to its current revision (physically, waiting until it is done)
    /// and returns that revision. A watch that resumes from an older resourceVersion, and reaches
    /// etcd (the API server runs with `--watch-cache=false`), then gets `410 Gone`.
    pub fn compact_etcd(&self) -> Result<i64> {
        let range = etcd_post(
            self.inner.ports().etcd_client,
            "/v3/kv/range",
            // Any key: only the header's revision is read. ("/" base64-encoded.)
            r#"{"key":"Lw==","limit":1}"#,
        )?;
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .with_context(|| format!("no header.revision in etcd's range answer {range}"))?;
        etcd_post(
            self.inner.ports().etcd_client,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )?;
        Ok(revision)
    }

    /// A kubeconfig (administrator, `system:masters`) for this environment.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.inner.root.join("kubeconfig")
    }

    /// The CA that signed the API server's serving certificate, PEM.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.inner.root.join("ca.crt")
    }

    /// A `kubectl` command already pointed at this environment's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.inner.assets.join("kubectl"));
        cmd.arg("--kubeconfig").arg(self.kubeconfig_path());
        cmd
    }

    /// Installs the standard-channel CRDs of the Gateway API version Gantry implements (from its Go
    /// module, which `controller/testenv/gateway-api-module.sh` finds or downloads) and waits until
    /// they are served.
    pub fn install_gateway_api_crds(&self) -> Result<()> {
        let script = testenv().join("gateway-api-module.sh");
        let out = Command::new(&script)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!("{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        }
        let module = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let crds = Path::new(&module).join("config/crd/standard");
        let run = |args: &[&str]| -> Result<()> {
            let out = self.kubectl().args(args).output().context("kubectl")?;
            if !out.status.success() {
                bail!(
                    "kubectl {}: {}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        run(&[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().context("module path")?,
        ])?;
        run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/grpcroutes.gateway.networking.k8s.io",
            "crd/referencegrants.gateway.networking.k8s.io",
        ])
    }

    /// A new administrator client. Panics if the kubeconfig cannot be loaded.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            Kubeconfig::read_from(self.kubeconfig_path()).expect("envtest kubeconfig is readable");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("envtest kubeconfig is valid");
        kube::Client::try_from(config).expect("kube client from envtest kubeconfig")
    }

    /// Creates a namespace named `<prefix>-<random suffix>` and returns its name.
    /// `prefix` should be a lowercase DNS label; it is shortened to 40 characters.
    pub async fn new_namespace(&self, prefix: &str) -> String {
        let prefix: String = prefix.chars().take(40).collect();
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", prefix.trim_end_matches('-'))),
                labels: Some([("gantry.test/envtest".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating a namespace with prefix {prefix:?}: {e}"));
        created
            .metadata
            .name
            .expect("the API server names generated namespaces")
    }

    /// Kills kube-apiserver and etcd (SIGKILL) and waits until their ports are
    /// free again. Data, certificates and ports are kept for `start_apiserver`.
    /// Does nothing when they are not running.
    pub fn stop_apiserver(&self) {
        self.inner.stop_processes();
    }

    /// Starts etcd and kube-apiserver again on the same ports with the same data,
    /// and waits for `/readyz`. Blocks; see `start_apiserver_async`.
    pub fn start_apiserver(&self) -> Result<()> {
        self.inner.start_processes()
    }

    /// `start_apiserver` on tokio's blocking pool.
    pub async fn start_apiserver_async(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.start_processes()).await?
    }

    /// Whether both processes are currently running and the API server is ready.
    pub fn is_ready(&self) -> bool {
        lock(&self.inner.procs).is_some() && self.inner.readyz().is_ok()
    }
}

impl Inner {
    fn ports(&self) -> Ports {
        *lock(&self.ports)
    }

    fn start_processes(&self) -> Result<()> {
        let mut procs = lock(&self.procs);
        if procs.is_some() {
            return Ok(());
        }
        let fixed = *lock(&self.ports_fixed);
        let mut last_err = None;
        for attempt in 1..=PORT_ATTEMPTS {
            if attempt > 1 {
                if fixed {
                    // Same ports are a must: wait for whoever holds one to let go.
                    std::thread::sleep(Duration::from_secs(2));
                } else {
                    *lock(&self.ports) = pick_ports()?;
                }
            }
            match self.try_start() {
                Ok(p) => {
                    *procs = Some(p);
                    *lock(&self.ports_fixed) = true;
                    return write_kubeconfig(&self.root, self.ports().apiserver);
                }
                Err(StartError::PortTaken(e)) => {
                    eprintln!("envtest: attempt {attempt}/{PORT_ATTEMPTS}: {e:#}");
                    last_err = Some(e);
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no start attempt was made")))
    }

    fn try_start(&self) -> std::result::Result<Procs, StartError> {
        let ports = self.ports();
        let deadline = Instant::now() + self.ready_timeout;
        // Logs are appended to across restarts; only this attempt's part is judged.
        let log_start = [self.log_len("etcd"), self.log_len("kube-apiserver")];

        let mut etcd = self
            .spawn("etcd", &self.etcd_args(ports))
            .map_err(StartError::Other)?;
        let etcd_ready = wait_until(deadline, &mut etcd, || etcd_healthy(ports.etcd_client));
        if let Err(e) = etcd_ready {
            stop(&mut etcd);
            wait_ports_free(ports);
            return Err(self.start_failure("etcd", e, log_start));
        }

        let mut apiserver = match self.spawn("kube-apiserver", &self.apiserver_args(ports)) {
            Ok(child) => child,
            Err(e) => {
                stop(&mut etcd);
                return Err(StartError::Other(e));
            }
        };
        if let Err(e) = wait_until(deadline, &mut apiserver, || self.readyz()) {
            stop(&mut apiserver);
            stop(&mut etcd);
            wait_ports_free(ports);
            return Err(self.start_failure("kube-apiserver", e, log_start));
        }
        Ok(Procs { etcd, apiserver })
    }

    fn log_len(&self, binary: &str) -> u64 {
        fs::metadata(self.root.join(format!("{binary}.log"))).map_or(0, |m| m.len())
    }

    /// Classifies a failed start-up and attaches the tail of both logs (the part
    /// written since `log_start`).
    fn start_failure(&self, what: &str, err: anyhow::Error, log_start: [u64; 2]) -> StartError {
        let logs = ["etcd", "kube-apiserver"]
            .into_iter()
            .zip(log_start)
            .map(|(binary, start)| {
                let path = self.root.join(format!("{binary}.log"));
                let bytes = fs::read(&path).unwrap_or_default();
                let new = bytes.get(start as usize..).unwrap_or_default();
                (String::from_utf8_lossy(new).into_owned(), path)
            })
            .collect::<Vec<_>>();
        let port_taken = logs
            .iter()
            .any(|(text, _)| text.contains("address already in use") || text.contains("bind: address"));
        let mut report = format!(
            "{what} did not become ready: {err:#}\n(set GANTRY_ENVTEST_KEEP=1 to keep {} for inspection)",
            self.root.display()
        );
        for (text, path) in &logs {
            report.push_str(&format!(
                "\n--- last lines of {} ---\n{}",
                path.display(),
                tail(text, 40)
            ));
        }
        let err = anyhow!(report);
        if port_taken {
            StartError::PortTaken(err)
        } else {
            StartError::Other(err)
        }
    }

    fn spawn(&self, binary: &str, args: &[String]) -> Result<Child> {
        use std::os::unix::process::CommandExt;
        let log_path = self.root.join(format!("{binary}.log"));
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut log_err = log.try_clone()?;
        writeln!(log_err, "=== envtest: starting {binary} {}", args.join(" "))?;
        // setpriv sets PR_SET_PDEATHSIG and execs the server in the same process,
        // so the server is our direct child (reaped by `stop`, never a zombie) and
        // gets SIGKILL when the supervisor thread that spawned it ends.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(self.assets.join(binary))
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a terminal's Ctrl-C reaches the test, not the servers.
            .process_group(0);
        self.supervisor
            .spawn(cmd)
            .with_context(|| format!("spawning {binary} via setpriv(1)"))
    }

    fn etcd_args(&self, ports: Ports) -> Vec<String> {
        let client = format!("http://{LOOPBACK}:{}", ports.etcd_client);
        let peer = format!("http://{LOOPBACK}:{}", ports.etcd_peer);
        vec![
            "--name=envtest".into(),
            format!("--data-dir={}", self.root.join("etcd-data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=envtest={peer}"),
            "--initial-cluster-state=new".into(),
            // Tests only: no fsync (a killed process loses nothing, only a host crash would).
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]
    }

    fn apiserver_args(&self, ports: Ports) -> Vec<String> {
        let f = |name: &str| self.root.join(name).display().to_string();
        let mut args = vec![
            format!("--etcd-servers=http://{LOOPBACK}:{}", ports.etcd_client),
            format!("--secure-port={}", ports.apiserver),
            format!("--bind-address={LOOPBACK}"),
            format!("--advertise-address={LOOPBACK}"),
            format!("--cert-dir={}", f("apiserver-certs")),
            format!("--tls-cert-file={}", f("apiserver.crt")),
            format!("--tls-private-key-file={}", f("apiserver.key")),
            format!("--client-ca-file={}", f("ca.crt")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", f("sa.pub")),
            format!("--service-account-signing-key-file={}", f("sa.key")),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--profiling=false".into(),
            // The `kubernetes` Service's Endpoints cannot hold 127.0.0.1 (validation
            // rejects loopback addresses), so reconciling them only logs errors.
            "--endpoint-reconciler-type=none".into(),
        ];
        args.extend(self.extra_apiserver_args.iter().cloned());
        args
    }

    fn stop_processes(&self) {
        let procs = lock(&self.procs).take();
        if let Some(mut p) = procs {
            stop(&mut p.apiserver);
            stop(&mut p.etcd);
            wait_ports_free(self.ports());
        }
    }

    /// One GET of `/readyz` with the administrator's client certificate.
    fn readyz(&self) -> Result<()> {
        let port = self.ports().apiserver;
        let addr = SocketAddr::from((LOOPBACK, port));
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(LOOPBACK).into());
        let conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name)?;
        let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                // Servers may close without close_notify once the body is sent.
                Err(_) if !response.is_empty() => break,
                Err(e) => return Err(e.into()),
            }
        }
        let text = String::from_utf8_lossy(&response);
        let status = text.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("200") {
            Ok(())
        } else {
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
            bail!("/readyz answered {status:?}: {}", tail(body, 8))
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

/// Polls `check` until it succeeds, the child exits, or the deadline passes.
fn wait_until(deadline: Instant, child: &mut Child, mut check: impl FnMut() -> Result<()>) -> Result<()> {
    let mut last = anyhow!("not checked yet");
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("process exited early with {status} (last check: {last:#})");
        }
        match check() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            bail!("not ready in time (last check: {last:#})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn etcd_healthy(port: u16) -> Result<()> {
    let addr = SocketAddr::from((LOOPBACK, port));
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        tcp,
        "GET /health HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    if response.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        bail!("etcd /health: {:?}", tail(&response, 3))
    }
}

/// One POST of a JSON body to etcd's v3 JSON gateway; the answer's JSON (an error when it is not
/// a 200).
fn etcd_post(port: u16, path: &str, body: &str) -> Result<serde_json::Value> {
    let addr = SocketAddr::from((LOOPBACK, port));
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        tcp,
        "POST {path} HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_owned();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("etcd {path}: {status:?}: {}", tail(&response, 3));
    }
    // HTTP/1.0: the body is not chunked and ends when etcd closes the connection.
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).with_context(|| format!("etcd {path}: {json}"))
}

/// SIGKILLs and reaps a server process.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Locks, also after a panic elsewhere poisoned the mutex (Drop must still work).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// A thread that spawns the server processes and lives as long as the
/// `TestEnv`, or until the lifetime is over. PR_SET_PDEATHSIG fires when the
/// spawning *thread* ends, so spawning from a short-lived thread (a test thread,
/// tokio's blocking pool) would kill the servers early; this thread ending is
/// exactly what should kill them.
struct Supervisor {
    tx: Mutex<Option<mpsc::Sender<SpawnRequest>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn new(lifetime: Duration) -> Result<Supervisor> {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("envtest-supervisor".into())
            .spawn(move || {
                let deadline = Instant::now() + lifetime;
                loop {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok((mut cmd, reply)) => {
                            let _ = reply.send(cmd.spawn());
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            eprintln!(
                                "envtest: lifetime of {}s is over (GANTRY_ENVTEST_LIFETIME_SECS); \
                             etcd and kube-apiserver get SIGKILL",
                                lifetime.as_secs()
                            );
                            return;
                        }
                    }
                }
            })?;
        Ok(Supervisor {
            tx: Mutex::new(Some(tx)),
            thread: Some(thread),
        })
    }

    fn spawn(&self, cmd: Command) -> Result<Child> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.send((cmd, reply_tx)).is_ok());
        if !sent {
            bail!("the envtest lifetime is over; no more processes are started");
        }
        let spawned = reply_rx
            .recv()
            .map_err(|_| anyhow!("the envtest supervisor thread ended"))?;
        Ok(spawned?)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// After a kill, the grandchild server may take a moment to exit and release
/// its listeners (and etcd its data-dir lock); wait for that, boundedly.
fn wait_ports_free(ports: Ports) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for port in [ports.apiserver, ports.etcd_client, ports.etcd_peer] {
        while TcpListener::bind((LOOPBACK, port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Three distinct free loopback ports (held open together so they differ).
fn pick_ports() -> Result<Ports> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind((LOOPBACK, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
    Ok(Ports {
        etcd_client: port(0)?,
        etcd_peer: port(1)?,
        apiserver: port(2)?,
    })
}

/// Generates the CA, serving and client certificates, the service-account key
/// and the kubeconfig in `root`; returns the TLS client config for probes.
fn write_credentials(root: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gantry-envtest-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let leaf = |sans: Vec<String>, cn: &str, org: Option<&str>, eku: ExtendedKeyUsagePurpose| -> Result<_> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(org) = org {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert, key))
    };
    // The service IP (first of --service-cluster-ip-range) and in-cluster names are
    // included so the certificate also fits clients that address it that way.
    let serving_sans = [
        "127.0.0.1",
        "localhost",
        "10.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ];
    let (serving, serving_key) = leaf(
        serving_sans.iter().map(|s| s.to_string()).collect(),
        "kube-apiserver",
        None,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (admin, admin_key) = leaf(
        Vec::new(),
        ADMIN_USER,
        Some("system:masters"),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let sa_key = KeyPair::generate()?;

    let write = |name: &str, contents: &str| {
        fs::write(root.join(name), contents).with_context(|| format!("writing {name}"))
    };
    write("ca.crt", &ca_cert.pem())?;
    write("apiserver.crt", &serving.pem())?;
    write("apiserver.key", &serving_key.serialize_pem())?;
    write("admin.crt", &admin.pem())?;
    write("admin.key", &admin_key.serialize_pem())?;
    write("sa.key", &sa_key.serialize_pem())?;
    write("sa.pub", &sa_key.public_key_pem())?;
    fs::create_dir_all(root.join("apiserver-certs"))?;
    fs::create_dir_all(root.join("etcd-data"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("etcd-data"), fs::Permissions::from_mode(0o700))?;
    }

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![admin.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(admin_key.serialize_der().into()),
        )?;
    Ok(Arc::new(tls))
}

/// Writes the kubeconfig. The server URL includes the port, which is only final
/// once the first start-up succeeded, so this runs after every start.
fn write_kubeconfig(root: &Path, port: u16) -> Result<()> {
    let q = |name: &str| serde_json::to_string(&root.join(name).display().to_string()).unwrap();
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: https://{LOOPBACK}:{port}
    certificate-authority: {ca}
users:
- name: {ADMIN_USER}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: {ADMIN_USER}
    namespace: default
current-context: envtest
",
        ca = q("ca.crt"),
        cert = q("admin.crt"),
        key = q("admin.key"),
    );
    let tmp = root.join("kubeconfig.tmp");
    fs::write(&tmp, kubeconfig)?;
    fs::rename(&tmp, root.join("kubeconfig"))?;
    Ok(())
}

/// `KUBEBUILDER_ASSETS`, or the last stdout line of the build script (run once
/// per test binary; the script itself serializes concurrent builds).
fn assets_dir() -> Result<PathBuf> {
    static ASSETS: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let resolved = ASSETS.get_or_init(|| {
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let script = testenv().join("build-control-plane.sh");
        eprintln!(
            "envtest: KUBEBUILDER_ASSETS is unset; running {} (a cold build takes a while)",
            script.display()
        );
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().last().map(str::trim) {
            Some(last) if out.status.success() && !last.is_empty() => Ok(PathBuf::from(last)),
            _ => Err(format!("{} failed with {}", script.display(), out.status)),
        }
    });
    resolved.clone().map_err(|e| anyhow!(e))
}

fn env_secs(name: &str, default: u64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `controller/testenv/`: the scripts that build the control plane and find the Gateway API module.
fn testenv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/testenv")
}
