//! Child processes: pinned spawning, a guard that stops the whole process tree on drop, a registry
//! that a signal handler drains on Ctrl-C, commands with a hard timeout, and /proc sampling.
//!
//! Every process the runner starts goes through [`Service::start`] (long-lived: proxies, backends)
//! or [`run_bounded`] (load generators, tools). Both register the pid; dropping the guard or
//! receiving SIGINT/SIGTERM/SIGHUP stops it and its descendants (nginx and HAProxy masters fork
//! workers, so the root alone is not enough).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Pids the runner started and has not stopped yet, with a name for messages.
static LIVE: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once SIGINT/SIGTERM/SIGHUP arrived; loops check it to stop early.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn register(pid: u32, name: &str) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid, name.to_string());
}

fn unregister(pid: u32) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
}

/// Stops everything still registered. Called from the signal thread.
pub fn stop_all_registered() -> usize {
    let pids: Vec<(u32, String)> = {
        let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.iter().map(|(p, n)| (*p, n.clone())).collect()
    };
    for (pid, _) in &pids {
        terminate_tree(*pid, None, Duration::from_secs(2));
        unregister(*pid);
    }
    pids.len()
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler: stop every registered child, then exit 130.
pub fn install_signal_handler() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register the handlers before returning so that no signal falls between.
    let mut int =
        rt.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) })?;
    let mut term =
        rt.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) })?;
    let mut hup =
        rt.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })?;
    thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        INTERRUPTED.store(true, Ordering::Relaxed);
        eprintln!("\nloadtests: interrupted, stopping child processes…");
        let n = stop_all_registered();
        eprintln!("loadtests: stopped {n} process trees");
        std::process::exit(130);
    })?;
    Ok(())
}

/// Which CPUs the proxy gets and which the load generator and backend get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinning {
    /// `taskset -c` list for the proxy.
    pub proxy: String,
    /// `taskset -c` list for the load generator and the backend.
    pub load: String,
    /// Number of CPUs in `proxy` (the worker/thread count of every proxy).
    pub proxy_cpu_count: usize,
    /// Number of CPUs in `load` (wrk/h2load thread count).
    pub load_cpu_count: usize,
    /// True when proxy and load share CPUs (the proxy's CPU time then competes with the client's).
    pub shared: bool,
}

impl Pinning {
    /// `proxy_cpus` CPUs for the proxy from CPU 0 up; the rest for the load, or all of them when
    /// nothing is left.
    pub fn new(proxy_cpus: usize, machine_cpus: usize) -> Pinning {
        let machine_cpus = machine_cpus.max(1);
        let p = proxy_cpus.clamp(1, machine_cpus);
        let list = |from: usize, to: usize| {
            if from == to {
                from.to_string()
            } else {
                format!("{from}-{to}")
            }
        };
        if p < machine_cpus {
            Pinning {
                proxy: list(0, p - 1),
                load: list(p, machine_cpus - 1),
                proxy_cpu_count: p,
                load_cpu_count: machine_cpus - p,
                shared: false,
            }
        } else {
            let all = list(0, machine_cpus - 1);
            Pinning {
                proxy: all.clone(),
                load: all,
                proxy_cpu_count: p,
                load_cpu_count: machine_cpus,
                shared: true,
            }
        }
    }
}

/// A command pinned with `taskset -c cpus`, killed by the kernel if the runner dies
/// (`setpriv --pdeathsig KILL`, when setpriv is there).
pub fn pinned(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    static SETPRIV: OnceLock<bool> = OnceLock::new();
    let has_setpriv = *SETPRIV.get_or_init(|| crate::setup::which("setpriv").is_some());
    let mut cmd;
    if has_setpriv {
        cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "taskset", "-c", cpus]);
    } else {
        cmd = Command::new("taskset");
        cmd.args(["-c", cpus]);
    }
    cmd.arg(program);
    cmd
}

/// A long-lived child (proxy, backend) whose stdout and stderr go to a log file. Dropping it stops
/// the process tree.
pub struct Service {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Service {
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> Result<Service> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        register(pid, name);
        Ok(Service {
            name: name.to_string(),
            child: Some(child),
            pid,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Err` with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}); log tail:\n{}",
                    self.name,
                    tail(&self.log, 15)
                );
            }
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Stops the process tree (TERM to the root, KILL to whatever is left after `grace`).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_tree(self.pid, Some(&mut child), Duration::from_secs(3));
            unregister(self.pid);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Output of a bounded command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, killing its tree after `timeout`. `Err` on timeout or spawn failure
/// (a non-zero exit is returned as `Ok`; the caller decides).
pub fn run_bounded(name: &str, cmd: Command, timeout: Duration) -> Result<Output> {
    run_bounded_with_input(name, cmd, None, timeout)
}

/// [`run_bounded`] with `input` written to the child's stdin (then closed).
pub fn run_bounded_with_input(
    name: &str,
    cmd: Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    run_bounded_inner(name, cmd, input, timeout, None)
}

/// [`run_bounded`] that also stops the child (and returns `Err`) as soon as `stop` is set.
pub fn run_bounded_until(name: &str, cmd: Command, timeout: Duration, stop: &AtomicBool) -> Result<Output> {
    run_bounded_inner(name, cmd, None, timeout, Some(stop))
}

fn run_bounded_inner(
    name: &str,
    mut cmd: Command,
    input: Option<&[u8]>,
    timeout: Duration,
    stop: Option<&AtomicBool>,
) -> Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
    let pid = child.id();
    register(pid, name);
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let data = data.to_vec();
        // A writer thread: a child that does not read its input cannot block the runner.
        thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
    }
    let out = child.stdout.take().map(reader_thread);
    let err = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let stopped = stop.is_some_and(|s| s.load(Ordering::Relaxed));
        if Instant::now() >= deadline || interrupted() || stopped {
            terminate_tree(pid, Some(&mut child), Duration::from_secs(1));
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    unregister(pid);
    let stdout = out.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    let stderr = err.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None if interrupted() => bail!("{name} stopped: interrupted"),
        None if stop.is_some_and(|s| s.load(Ordering::Relaxed)) => bail!("{name} stopped early"),
        None => bail!(
            "{name} did not finish within {:.0?}; stderr tail: {}",
            timeout,
            last_lines(&stderr, 5)
        ),
    }
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A helper process that talks line by line on stdout (the idle-connection client). Lines are read
/// on a thread and handed over with a timeout.
pub struct LineChild {
    name: String,
    child: Option<Child>,
    pid: u32,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl LineChild {
    pub fn start(name: &str, mut cmd: Command) -> Result<LineChild> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        register(pid, name);
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().map(reader_thread);
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(LineChild {
            name: name.to_string(),
            child: Some(child),
            pid,
            lines: rx,
            stderr,
        })
    }

    /// The next stdout line, or `Err` after `timeout` or when the child closed stdout.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String> {
        self.lines.recv_timeout(timeout).map_err(|e| {
            let err = self.stderr_now();
            anyhow::anyhow!("{}: no output ({e}); stderr: {}", self.name, last_lines(&err, 5))
        })
    }

    /// Closes the child's stdin (the signal to finish).
    pub fn close_stdin(&mut self) {
        if let Some(child) = self.child.as_mut() {
            drop(child.stdin.take());
        }
    }

    fn stderr_now(&mut self) -> String {
        // Only available once the child is gone; kill it first so the join cannot hang.
        if let Some(mut child) = self.child.take() {
            terminate_tree(self.pid, Some(&mut child), Duration::from_secs(1));
            unregister(self.pid);
        }
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            terminate_tree(self.pid, Some(&mut child), Duration::from_secs(2));
            unregister(self.pid);
        }
    }
}

/// Sends `sig` (e.g. "HUP") to `pid` with kill(1); no unsafe code needed.
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// TERM to the root; after `grace`, KILL to the root and every descendant still alive (collected
/// before the TERM, because orphans are re-parented and cannot be found afterwards).
fn terminate_tree(pid: u32, child: Option<&mut Child>, grace: Duration) {
    let mut victims = descendants(pid);
    victims.insert(0, pid);
    let _ = signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    let mut child = child;
    loop {
        let root_gone = match child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => !alive(pid),
        };
        if root_gone && victims.iter().skip(1).all(|p| !alive(*p)) {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    for p in &victims {
        if alive(*p) {
            let _ = signal(*p, "KILL");
        }
    }
    if let Some(c) = child {
        let _ = c.wait();
    }
}

/// Running and not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => parse_stat(&s)
            .map(|st| st.state != 'Z' && st.state != 'X')
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The fields of /proc/PID/stat the runner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process, its threads and its reaped
    /// children (old nginx/HAProxy workers after a reload).
    pub ticks: u64,
}

/// Parses one /proc/PID/stat line (the command name may hold spaces and parentheses).
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
    let ticks = [11, 12, 13, 14]
        .iter()
        .map(|i| num(*i).unwrap_or(0).max(0) as u64)
        .sum();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: num(1)? as u32,
        ticks,
    })
}

/// Every descendant of `root` (children first-level first).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(st) = parse_stat(&s) {
                    children.entry(st.ppid).or_default().push(pid);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if out.len() > 10_000 {
            break;
        }
        if let Some(kids) = children.get(&p) {
            for k in kids {
                out.push(*k);
                queue.push(*k);
            }
        }
    }
    out
}

/// CPU and memory of a process tree at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeSample {
    /// CPU seconds so far (user + system, live processes plus reaped children).
    pub cpu_s: f64,
    /// Sum of VmRSS over the tree, KiB.
    pub rss_kb: u64,
    /// Sum of VmHWM (peak RSS) over the tree, KiB. Shared pages count once per process.
    pub hwm_kb: u64,
    /// Sum of Pss over the tree (shared pages split between the processes sharing them), KiB: what
    /// the tree really occupies now, without the double counting of `rss_kb`.
    pub pss_kb: u64,
    pub processes: usize,
}

pub fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

pub fn sample_tree(root: u32) -> TreeSample {
    let mut pids = descendants(root);
    pids.insert(0, root);
    let mut s = TreeSample::default();
    let tck = clock_ticks();
    for pid in pids {
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(st) = parse_stat(&stat) {
                s.cpu_s += st.ticks as f64 / tck;
                s.processes += 1;
            }
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            let (rss, hwm) = parse_status_mem(&status);
            s.rss_kb += rss;
            s.hwm_kb += hwm;
        }
        if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            s.pss_kb += kib_field(&rollup, "Pss:");
        }
    }
    s
}

/// Open file descriptors of one process (entries of /proc/PID/fd); `None` when it is gone.
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// (VmRSS, VmHWM) in KiB from /proc/PID/status.
pub fn parse_status_mem(status: &str) -> (u64, u64) {
    (kib_field(status, "VmRSS:"), kib_field(status, "VmHWM:"))
}

/// The number after `name` on the first line starting with it (`Pss:   1234 kB`), 0 if absent.
pub fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    fs::read_to_string(path)
        .map(|s| last_lines(&s, n))
        .unwrap_or_default()
}

pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_proxy_cpu_leaves_the_other_to_the_load() {
        let p = Pinning::new(1, 2);
        assert_eq!((p.proxy.as_str(), p.load.as_str(), p.shared), ("0", "1", false));
        assert_eq!((p.proxy_cpu_count, p.load_cpu_count), (1, 1));
    }

    #[test]
    fn two_proxy_cpus_on_two_cores_share_them_with_the_load() {
        let p = Pinning::new(2, 2);
        assert_eq!(
            (p.proxy.as_str(), p.load.as_str(), p.shared),
            ("0-1", "0-1", true)
        );
        assert_eq!((p.proxy_cpu_count, p.load_cpu_count), (2, 2));
        let p = Pinning::new(2, 8);
        assert_eq!(
            (p.proxy.as_str(), p.load.as_str(), p.shared),
            ("0-1", "2-7", false)
        );
    }

    #[test]
    fn stat_parsing_survives_names_with_spaces_and_parentheses() {
        let line = "4242 (nginx: (worker) x) S 4241 4241 4241 0 -1 4194624 1234 0 0 0 150 70 3 4 20 0 1 0 \
                    12345 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 4241);
        assert_eq!(st.ticks, 150 + 70 + 3 + 4);
    }

    #[test]
    fn status_memory_fields_are_read_in_kib() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    5432 kB\n";
        assert_eq!(parse_status_mem(status), (5432, 9876));
        assert_eq!(parse_status_mem("Name:\tx\n"), (0, 0));
        let rollup =
            "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1024 kB\nPss_Anon: 900 kB\n";
        assert_eq!(kib_field(rollup, "Pss:"), 1024);
    }

    #[test]
    fn bounded_runs_end_when_told_to_stop() {
        let stop = AtomicBool::new(false);
        let mut cmd = Command::new("sleep");
        cmd.arg("0.1");
        let out = run_bounded_until("sleep", cmd, Duration::from_secs(10), &stop).unwrap();
        assert!(out.status.success());
        stop.store(true, Ordering::Relaxed);
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let t = Instant::now();
        let err = run_bounded_until("sleep", cmd, Duration::from_secs(60), &stop).unwrap_err();
        assert!(format!("{err:#}").contains("stopped early"), "{err:#}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn own_process_is_alive_and_sampled() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(fd_count(me).is_some_and(|n| n >= 3));
        let s = sample_tree(me);
        assert!(s.rss_kb > 0 && s.hwm_kb >= s.rss_kb && s.pss_kb > 0 && s.processes >= 1);
    }
}
