//! The real `gantry` binary on free loopback ports: one builder for the manifest-folder mode and
//! the cluster mode, readiness, the log, `/debug/routes` and `/metrics`.

use std::{
    ffi::OsString,
    io::Write,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{client::plain_client, envtest::TestEnv};

/// A [`GantryBuilder`] for the `gantry` binary of the calling package: `env!("CARGO_BIN_EXE_gantry")`
/// is expanded where the macro is used, so only the `gantry` package's integration tests and
/// benchmarks can call it (others pass a path to [`Gantry::builder`]).
#[macro_export]
macro_rules! gantry {
    () => {
        $crate::Gantry::builder(env!("CARGO_BIN_EXE_gantry"))
    };
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a manifest file atomically (write to a hidden temp file, then rename), as a tool would.
pub fn write_manifest(dir: &Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Where the objects come from.
enum Source {
    /// `--manifests <dir>`, a folder the test owns.
    Folder(PathBuf),
    /// `--manifests` on a fresh temporary folder holding these files, owned by the [`Gantry`].
    Files(Vec<(String, String)>),
    /// `--kubeconfig <path>`; the log goes to `log_dir`.
    Cluster { kubeconfig: PathBuf, log_dir: PathBuf },
    /// Neither: the flags say it all (a chart's rendered arguments, say).
    Flags,
}

/// How to start `gantry`: [`Gantry::builder`] or [`gantry!`].
///
/// Defaults: listeners on three free loopback ports (`--http-addr`, `--https-addr`,
/// `--admin-addr`), `GANTRY_LOG=info`, `GANTRY_MANIFESTS` removed from the environment, ready
/// within 20 s.
pub struct GantryBuilder {
    bin: PathBuf,
    source: Source,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    log: Option<PathBuf>,
    ready_within: Duration,
}

impl GantryBuilder {
    /// `--manifests dir`, a folder the test writes (see [`write_manifest`]).
    pub fn manifests(mut self, dir: &Path) -> Self {
        self.source = Source::Folder(dir.to_path_buf());
        self
    }

    /// Adds the file `name` to a fresh temporary manifest folder that lives as long as the
    /// [`Gantry`] ([`Gantry::dir`]; write more with [`Gantry::write_manifest`]).
    pub fn manifest(mut self, name: &str, contents: &str) -> Self {
        let files = match &mut self.source {
            Source::Files(files) => files,
            _ => {
                self.source = Source::Files(Vec::new());
                let Source::Files(files) = &mut self.source else {
                    unreachable!()
                };
                files
            }
        };
        files.push((name.to_owned(), contents.to_owned()));
        self
    }

    /// The YAML documents `docs` as one file, `all.yaml`, of the temporary manifest folder (see
    /// [`manifest`](Self::manifest)).
    pub fn yaml<S: AsRef<str>>(self, docs: &[S]) -> Self {
        let docs: Vec<&str> = docs.iter().map(AsRef::as_ref).collect();
        self.manifest("all.yaml", &docs.join("---\n"))
    }

    /// Cluster mode against `env` (its kubeconfig, the log in its folder), as the cluster tests run
    /// it: `--access-log=false`, `GANTRY_LOG=info,gantry=debug`, without `KUBECONFIG`, `POD_NAME`
    /// and `POD_NAMESPACE` from the test's environment, ready within 60 s.
    pub fn cluster(self, env: &TestEnv) -> Self {
        self.kubeconfig(env, &env.kubeconfig_path())
            .arg("--access-log=false")
    }

    /// Cluster mode against `env` with another kubeconfig than its own (a relay in front of the API
    /// server, a ServiceAccount's token), without `--access-log=false`.
    pub fn kubeconfig(mut self, env: &TestEnv, kubeconfig: &Path) -> Self {
        self.source = Source::Cluster {
            kubeconfig: kubeconfig.to_path_buf(),
            log_dir: env.dir().to_path_buf(),
        };
        self.env.retain(|(k, _)| k != "GANTRY_LOG");
        self.env.push(("GANTRY_LOG".into(), "info,gantry=debug".into()));
        self.env_remove
            .extend(["KUBECONFIG", "POD_NAME", "POD_NAMESPACE"].map(String::from));
        self.ready_within = Duration::from_secs(60);
        self
    }

    /// No `--manifests` or `--kubeconfig` of the builder's own; the flags given say where objects
    /// come from.
    pub fn flags_only(mut self) -> Self {
        self.source = Source::Flags;
        self
    }

    /// One more flag (after the listen addresses, so a flag given here wins).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable (a later one of the same name wins).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env_remove.retain(|k| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the log goes (stdout and stderr); by default beside the manifest folder
    /// (`<dir>.gantry.log`) or in the control plane's folder (`gantry-<admin port>.log`).
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// How long [`start`](Self::start) waits for `/readyz` (20 s; 60 s in cluster mode).
    pub fn ready_within(mut self, limit: Duration) -> Self {
        self.ready_within = limit;
        self
    }

    /// Starts gantry and waits until `/readyz` answers 200, panicking with the log when it does not
    /// within the limit or exits.
    ///
    /// The ports are free when chosen but not reserved, so a test running beside this one may take
    /// one first: a gantry that exits because an address is in use is started again on new ports
    /// (at most 3 times).
    pub async fn start(self) -> Gantry {
        for _ in 0..3 {
            let mut g = self.spawn();
            let deadline = Instant::now() + self.ready_within;
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
                    panic!(
                        "gantry not ready within {:?}; log:\n{}",
                        self.ready_within,
                        g.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("gantry found its ports taken three times in a row");
    }

    /// Starts gantry without waiting for it (see [`Gantry::wait_ready`]).
    pub fn spawn(&self) -> Gantry {
        let (http, https, admin) = (free_port(), free_port(), free_port());
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
        let mut cmd = Command::new(&self.bin);
        let mut temp = None;
        let (dir, default_log) = match &self.source {
            Source::Folder(dir) => {
                cmd.arg("--manifests").arg(dir);
                (dir.clone(), dir.with_extension("gantry.log"))
            }
            Source::Files(files) => {
                let t = tempfile::tempdir().unwrap();
                for (name, contents) in files {
                    write_manifest(t.path(), name, contents);
                }
                cmd.arg("--manifests").arg(t.path());
                let dir = t.path().to_path_buf();
                temp = Some(t);
                (dir.clone(), dir.with_extension("gantry.log"))
            }
            Source::Cluster { kubeconfig, log_dir } => {
                cmd.arg("--kubeconfig").arg(kubeconfig);
                (log_dir.clone(), log_dir.join(format!("gantry-{admin}.log")))
            }
            Source::Flags => {
                let dir = std::env::temp_dir();
                (dir.clone(), dir.join(format!("gantry-{admin}.log")))
            }
        };
        let log = self.log.clone().unwrap_or(default_log);
        let out = std::fs::File::create(&log).unwrap();
        cmd.args(["--http-addr", &addr(http).to_string()])
            .args(["--https-addr", &addr(https).to_string()])
            .args(["--admin-addr", &addr(admin).to_string()])
            .args(&self.args)
            .env("GANTRY_LOG", "info")
            .env_remove("GANTRY_MANIFESTS");
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        Gantry {
            child: Some(child),
            http: addr(http),
            https: addr(https),
            admin: addr(admin),
            dir,
            log,
            _temp: temp,
        }
    }
}

/// The `gantry` binary, running on free loopback ports and killed (SIGKILL) when dropped: a test
/// that wants a graceful stop calls [`sigterm`](Self::sigterm) and [`wait_exit`](Self::wait_exit).
/// (SIGKILL on drop is deliberate: leader-election tests drop a replica to make it vanish without
/// releasing its Lease.)
pub struct Gantry {
    pub child: Option<Child>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// The manifest folder, or the control plane's folder in cluster mode.
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The temporary manifest folder of [`GantryBuilder::manifest`], deleted on drop.
    _temp: Option<tempfile::TempDir>,
}

// === impl Gantry ===

impl Gantry {
    /// A builder for the binary at `bin` (see [`gantry!`] for the `gantry` package's own tests).
    pub fn builder(bin: impl Into<PathBuf>) -> GantryBuilder {
        GantryBuilder {
            bin: bin.into(),
            source: Source::Flags,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            log: None,
            ready_within: Duration::from_secs(20),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    async fn is_ready(&self) -> bool {
        plain_client()
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// Waits until `/readyz` is 200, at most `limit`; panics with the log otherwise.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.is_ready().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gantry not ready within {limit:?}; log:\n{}", self.log_text());
    }

    /// Writes (atomically) a file into the manifest folder.
    pub fn write_manifest(&self, name: &str, contents: &str) {
        write_manifest(&self.dir, name, contents)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://<plain listener><path>`.
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

    /// The `/metrics` text; `None` when it does not answer.
    pub async fn metrics_text(&self) -> Option<String> {
        plain_client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// The sum of every sample of metric `name` whose labels include each `(label, value)` of
    /// `labels` (all samples when `labels` is empty); `None` when there is none or `/metrics` does
    /// not answer.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text().await?;
        let mut found = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
            let has = |(k, v): &(&str, &str)| label_text.contains(&format!("{k}=\"{v}\""));
            if metric_name == name && labels.iter().all(has) {
                *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
            }
        }
        found
    }

    /// The value of one series exactly as exposed, e.g.
    /// `gantry_kube_relists_total{kind="Ingress"}`; `None` when absent.
    pub async fn metric_series(&self, series: &str) -> Option<f64> {
        let text = self.metrics_text().await?;
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(s, _)| *s == series)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn sigterm(&self) {
        let pid = self.pid();
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
