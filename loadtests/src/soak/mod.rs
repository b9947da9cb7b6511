//! `loadtests soak`: Gantry alone for a long time under mixed, rate-limited traffic while its routes
//! and endpoints change, sampling its memory and file descriptors; two memory probes first.
//!
//! A stability test, not a throughput one: every load is rate-limited well below what Gantry serves
//! on this machine, so that growth in memory or descriptors, errors, or a crash stand out.
//!
//! 1. Setup as for `run` (tools, oha, the Gantry binary, the shared certificate), then the backend
//!    nginx (3 endpoints), the WebSocket echo server, and Gantry with both as Services
//!    ([`Topology::ws_route`]).
//! 2. Memory probes on the fresh Gantry: slow readers, then idle HTTP/2 over TLS.
//! 3. For `--duration`: oha HTTP/1.1 keep-alive, oha HTTP/2 over TLS and oha new TLS connections at
//!    fixed rates; `ws-load` rounds; slow downloads; alternating route and endpoint churn; a sample
//!    every `--sample-every` appended to `samples.csv`.
//! 4. A new route's propagation time, a sample once the clients are gone, and the report.

pub mod clients;
pub mod report;

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::churn;
use crate::cli::{ProxyKind, SoakArgs, WsLoadArgs};
use crate::config::{
    backend::DOWNLOAD_PATH, churn_hosts, Endpoint, Routes, Topology, MAIN_HOST, WS_HOST, WS_PATH,
};
use crate::idle::open_in_batches;
use crate::loadgen::{oha_args_with, parse_oha, parse_oha_statuses, OhaMode};
use crate::net::{free_port, http_get, local};
use crate::procs::{self, alive, fd_count, kib_field, last_lines, pinned, run_bounded_until, Pinning};
use crate::proxy::{Backend, Env, ProxyInstance};
use crate::report::ChurnStats;
use crate::scenarios::{BackendKind, Churn};
use crate::setup;
use crate::svg;
use crate::ws::WsLoadResult;
use report::{
    active_connections, csv_line, judge, markdown, memory_summary, warmup_for, DownloadTotals, HttpTotals,
    ProbeResult, Sample, SoakReport, SoakSettings, WsTotals, CSV_HEADER,
};

/// One rate-limited oha load.
struct OhaLoad {
    name: &'static str,
    conns: usize,
    /// Requests per second, all connections together.
    rate: u32,
    mode: OhaMode,
    tls: bool,
}

impl OhaLoad {
    fn describe(&self) -> String {
        let how = match self.mode {
            OhaMode::KeepAlive => "HTTP/1.1 keep-alive",
            OhaMode::Http2 => "HTTP/2",
            OhaMode::NewConnection => "a new connection per request",
        };
        format!(
            "oha {how}{}, {} connections, {} req/s, GET / (3-byte response)",
            if self.tls { " over TLS" } else { "" },
            self.conns,
            self.rate
        )
    }
}

const OHA_LOADS: [OhaLoad; 3] = [
    OhaLoad {
        name: "http1-keepalive",
        conns: 32,
        rate: 1500,
        mode: OhaMode::KeepAlive,
        tls: false,
    },
    OhaLoad {
        name: "h2-tls",
        conns: 8,
        rate: 500,
        mode: OhaMode::Http2,
        tls: true,
    },
    OhaLoad {
        name: "tls-new-connections",
        conns: 2,
        rate: 5,
        mode: OhaMode::NewConnection,
        tls: true,
    },
];

/// oha runs in rounds of at most this long (its memory grows with the requests of a round).
const OHA_ROUND: Duration = Duration::from_secs(600);
const WS_CONNS: usize = 50;
const WS_ROUND: Duration = Duration::from_secs(60);
/// Each WebSocket connection sends a message this long after the previous echo (~500 msg/s).
const WS_PAUSE_MS: u64 = 100;
const SLOW_CONNS: usize = 20;
/// A round shorter than this is not started.
const MIN_ROUND: Duration = Duration::from_secs(2);
/// How long the probes hold their connections before measuring.
const PROBE_HOLD: Duration = Duration::from_secs(3);
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// What a run needs besides the arguments, fixed once Gantry serves.
struct Running {
    pid: u32,
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    oha: PathBuf,
    self_exe: PathBuf,
    load_cpus: String,
    raw: PathBuf,
}

pub fn run(args: SoakArgs) -> Result<()> {
    procs::install_signal_handler()?;
    let started = Instant::now();
    let (root, target) = setup::workspace_dirs();
    let out = args.out.clone().unwrap_or_else(|| target.join("loadtests/soak"));
    let logs = out.join("logs");
    let run_dir = out.join("run");
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    fs::create_dir_all(run_dir.join("raw"))?;
    let probes_s = 20 + u64::from(args.probe_conns) / 50;
    eprintln!(
        "loadtests soak: {:.0?} of traffic after setup and about {probes_s} s of memory probes; output in {}",
        args.duration,
        out.display()
    );

    let tools = setup::ensure_tools(args.no_install, &logs)?;
    let oha = setup::ensure_oha(args.no_install, &logs).map_err(|e| anyhow!("oha is needed: {e}"))?;
    let gantry = setup::gantry(
        &root,
        &target,
        args.no_build || args.gantry_bin.is_some(),
        args.gantry_bin.as_deref(),
        &logs,
    )
    .map_err(|e| anyhow!("gantry is not available: {e}"))?;
    let cert = setup::ensure_cert(&tools.openssl, &out.join("certs"))?;
    let cert_pem = fs::read_to_string(&cert.cert)?;
    let key_pem = fs::read_to_string(&cert.key)?;
    let machine = setup::machine(&tools, Some(&oha), &root);
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pinning = Pinning::new(2, cpus);
    let self_exe = std::env::current_exe()?;
    let as_root = setup::is_root();
    let env = Env {
        tools: &tools,
        gantry: Some(&gantry),
        pinning: &pinning,
        self_exe: &self_exe,
        cert_pem: &cert_pem,
        key_pem: &key_pem,
        as_root,
    };

    let mut backend = Backend::start(
        &BackendKind::Nginx { endpoints: 3 },
        &run_dir.join("backend"),
        &env,
    )?;
    let mut ws_backend = Backend::start(&BackendKind::WsEcho, &run_dir.join("ws-backend"), &env)?;
    let n = backend.endpoints.len();
    let topo = Topology {
        workers: pinning.proxy_cpu_count,
        http: local(free_port()?),
        https: local(free_port()?),
        admin: local(free_port()?),
        tls_resumption: true,
        upstream_keepalive: 64,
        routes: Routes::Single,
        churn_hosts: churn_hosts(0),
        websocket: false,
        policy_mix: false,
        // Endpoint churn rotates which 2 of the 3 are listed; it starts without the last.
        endpoints: backend
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint {
                addr: *a,
                active: n < 2 || i + 1 < n,
            })
            .collect(),
        ws_route: ws_backend.endpoints.first().copied(),
        cert: cert.clone(),
        as_root,
    };
    // The probes get a Gantry of their own, so that the soak starts from a fresh process.
    let start_gantry = |name: &str| -> Result<(ProxyInstance, Running)> {
        let mut topo = topo.clone();
        (topo.http, topo.https, topo.admin) = (local(free_port()?), local(free_port()?), local(free_port()?));
        let mut inst = ProxyInstance::start(ProxyKind::Gantry, topo, &run_dir.join(name), &env)?;
        let t = Instant::now();
        inst.wait_ready(Duration::from_secs(60))?;
        eprintln!(
            "loadtests soak: {name} serving after {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let running = Running {
            pid: inst.pid(),
            http: inst.topo.http,
            https: inst.topo.https,
            admin: inst.topo.admin,
            oha: oha.clone(),
            self_exe: self_exe.clone(),
            load_cpus: pinning.load.clone(),
            raw: run_dir.join("raw"),
        };
        Ok((inst, running))
    };

    let mut report = SoakReport {
        machine,
        gantry_bin: gantry.path.display().to_string(),
        generated_at: setup::utc_now(),
        settings: SoakSettings {
            duration_s: args.duration.as_secs_f64(),
            churn_every_s: args.churn_every.as_secs_f64(),
            sample_every_s: args.sample_every.as_secs_f64(),
            probe_conns: args.probe_conns as usize,
            max_rss_growth_pct: args.max_rss_growth_pct,
            max_fd_growth: args.max_fd_growth,
            workers: pinning.proxy_cpu_count,
            proxy_cpu_list: pinning.proxy.clone(),
            load_cpu_list: pinning.load.clone(),
        },
        notes: notes(&pinning),
        ..SoakReport::default()
    };

    eprintln!(
        "loadtests soak: memory probes ({} connections each, each on a fresh Gantry)…",
        args.probe_conns
    );
    run_probes(&start_gantry, &cert.cert, args.probe_conns as usize, &mut report);

    let (mut inst, ctx) = start_gantry("gantry")?;
    eprintln!("loadtests soak: mixed traffic for {:.0?}…", args.duration);
    let samples_path = out.join("samples.csv");
    let traffic = run_traffic(&ctx, &args, &mut inst, &samples_path)?;
    report.http = traffic.http;
    report.websocket = traffic.ws;
    report.slow_downloads = traffic.downloads;
    report.churn = traffic.churn;
    report.samples = traffic.samples.len();
    report.memory = memory_summary(&traffic.samples, warmup_for(args.duration).as_secs_f64());
    report.gantry_exit = traffic.gantry_exit;

    if let Err(e) = inst.check_alive() {
        report.gantry_exit.get_or_insert(format!("{e:#}"));
    }
    if report.gantry_exit.is_none() {
        report.churn.propagation_ms = churn::propagation(&mut inst, Duration::from_secs(5));
        report.churn.propagation_timed_out = report.churn.propagation_ms.is_none();
        // Once every client is gone: what Gantry keeps.
        report.after_traffic = Some(settle(&ctx, Some(0), traffic.t0));
    }
    for (name, b) in [
        ("backend nginx", &mut backend),
        ("WebSocket echo server", &mut ws_backend),
    ] {
        if let Err(e) = b.check_alive() {
            report.backend_exit.get_or_insert(format!("{name}: {e:#}"));
        }
    }
    inst.stop();
    backend.stop();
    ws_backend.stop();

    report.elapsed_s = started.elapsed().as_secs_f64();
    report.verdict = judge(&report);
    write_outputs(&out, &report, &traffic.samples)?;
    print!("{}", markdown(&report));
    println!(
        "\nReport: {}  {}\nSamples: {}  Plot: {}",
        out.join("report.md").display(),
        out.join("report.json").display(),
        samples_path.display(),
        out.join("soak.svg").display()
    );
    eprintln!("loadtests soak: {}", report.verdict.line);
    if !report.verdict.pass {
        bail!(
            "soak test FAILED ({} reason(s), see report.md)",
            report.verdict.reasons.len()
        );
    }
    Ok(())
}

fn notes(pinning: &Pinning) -> Vec<String> {
    let mut notes = vec![
        "The memory probes run first, each on a Gantry of its own that is stopped afterwards; the soak \
         starts another fresh one (same binary and configuration), so no figure includes memory another \
         part freed."
            .to_string(),
        "After a probe closes its connections, Gantry keeps the upstream connections of the responses that \
         had finished as idle keep-alive connections (up to 1024 per endpoint and worker, closed after 90 s \
         idle, or when the endpoint is removed): the fds and part of the RSS after close are those."
            .to_string(),
        "RSS is VmRSS of the gantry process; fds are the entries of /proc/PID/fd; open conns is \
         gantry_active_connections (admin /metrics) summed over the listeners."
            .to_string(),
    ];
    if pinning.shared {
        notes.push(format!(
            "Gantry and the clients share CPUs {} (this machine cannot separate them).",
            pinning.load
        ));
    }
    notes
}

/// Gantry now; `t_s` counts from `t0`.
fn sample(ctx: &Running, t0: Instant) -> Sample {
    let status = fs::read_to_string(format!("/proc/{}/status", ctx.pid)).unwrap_or_default();
    Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kib: procs::parse_status_mem(&status).0,
        fds: fd_count(ctx.pid).unwrap_or(0),
        threads: kib_field(&status, "Threads:"),
        active_conns: http_get(ctx.admin, MAIN_HOST, "/metrics", Duration::from_secs(2))
            .ok()
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| active_connections(&body)),
    }
}

/// Waits (at most 10 s) until Gantry reports at most `conns` open connections, then 1 s more, and
/// samples.
fn settle(ctx: &Running, conns: Option<u64>, t0: Instant) -> Sample {
    let until = Instant::now() + Duration::from_secs(10);
    if let Some(limit) = conns {
        while Instant::now() < until && !procs::interrupted() {
            if sample(ctx, t0).active_conns.is_none_or(|n| n <= limit) {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    thread::sleep(Duration::from_secs(1));
    sample(ctx, t0)
}

/// Runs each memory probe on a Gantry of its own (`start`), so that neither finds memory the other
/// freed, and stops it afterwards.
fn run_probes(
    start: &impl Fn(&str) -> Result<(ProxyInstance, Running)>,
    cert: &Path,
    conns: usize,
    report: &mut SoakReport,
) {
    let rt = match clients::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            report.probe_errors.push(format!("no tokio runtime: {e:#}"));
            return;
        }
    };
    let mut on_fresh_gantry =
        |name: &str, run: &dyn Fn(&Running) -> ProbeResult| match start(&format!("gantry-probe-{name}")) {
            Ok((mut inst, ctx)) => {
                let p = run(&ctx);
                if let Err(e) = inst.check_alive() {
                    report.probe_errors.push(format!("{name}: gantry exited: {e:#}"));
                }
                inst.stop();
                report.probes.push(p);
            }
            Err(e) => report.probe_errors.push(format!("{name}: {e:#}")),
        };

    on_fresh_gantry("slow-readers", &|ctx| {
        let mut p = probe(
            ctx,
            conns,
            "slow-readers",
            || {
                let opened = rt.block_on(open_in_batches(
                    conns,
                    200,
                    clients::IO_TIMEOUT,
                    Duration::from_secs(90),
                    || clients::open_slow_reader(ctx.http, MAIN_HOST, DOWNLOAD_PATH),
                ));
                rt.block_on(async { tokio::time::sleep(PROBE_HOLD).await });
                opened
            },
            |mut held| {
                let (started, problem) = rt.block_on(clients::responses_started(&mut held.conns));
                let silent = held.conns.len() as u64 - started;
                drop(held.conns);
                rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
                (silent, problem)
            },
        );
        p.description = format!(
            "plain-HTTP connections each sending GET {DOWNLOAD_PATH} (1 MiB) and never reading, held {} s; \
             a connection whose response had not begun with `HTTP/1.1 200` by then counts as failed",
            PROBE_HOLD.as_secs()
        );
        p
    });

    let tls = match clients::h2_tls_config(cert) {
        Ok(t) => t,
        Err(e) => {
            report
                .probe_errors
                .push(format!("idle-h2-tls: client TLS setup: {e:#}"));
            return;
        }
    };
    on_fresh_gantry("idle-h2-tls", &|ctx| {
        let mut p = probe(
            ctx,
            conns,
            "idle-h2-tls",
            || {
                let opened = rt.block_on(open_in_batches(
                    conns,
                    100,
                    clients::IO_TIMEOUT,
                    Duration::from_secs(90),
                    || clients::open_idle_h2(ctx.https, tls.clone(), MAIN_HOST),
                ));
                rt.block_on(async { tokio::time::sleep(PROBE_HOLD).await });
                opened
            },
            |held| {
                drop(held.conns);
                // Let the runtime run the aborted connection tasks to their end (closing the
                // sockets).
                rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
                (0, None)
            },
        );
        p.description = format!(
            "TLS connections (full handshakes, ALPN h2) that each completed one GET / over HTTP/2 and then \
             stayed idle, held {} s",
            PROBE_HOLD.as_secs()
        );
        p
    });
}

/// One memory probe: sample, `open` (and hold), sample, `close` (returns connections found broken
/// and why), wait until Gantry's connection count is back down, sample.
fn probe<C>(
    ctx: &Running,
    conns: usize,
    name: &str,
    open: impl FnOnce() -> crate::idle::Opened<C>,
    close: impl FnOnce(crate::idle::Opened<C>) -> (u64, Option<String>),
) -> ProbeResult {
    let t0 = Instant::now();
    let before = settle(ctx, None, t0);
    let held = open();
    let during = sample(ctx, t0);
    let (opened, mut failed, mut first_error, open_s) = (
        held.conns.len() as u64,
        held.failed,
        held.first_error.clone(),
        held.elapsed_s,
    );
    let (broken, why) = close(held);
    failed += broken;
    if first_error.is_none() {
        first_error = why;
    }
    let after = settle(ctx, before.active_conns, t0);
    let mut p = ProbeResult {
        name: name.into(),
        conns,
        opened,
        failed,
        first_error,
        open_s,
        before,
        during,
        after,
        ..ProbeResult::default()
    };
    p.compute();
    eprintln!(
        "   {name}: {opened} of {conns} open, {failed} failed; RSS {:.1} → {:.1} MiB ({:.1} KiB/conn), after close {:.1} MiB",
        before.rss_kib as f64 / 1024.0,
        during.rss_kib as f64 / 1024.0,
        p.kib_per_conn,
        after.rss_kib as f64 / 1024.0
    );
    p
}

/// What the soak traffic produced.
struct Traffic {
    /// When the traffic started (sample times count from here).
    t0: Instant,
    http: Vec<HttpTotals>,
    ws: WsTotals,
    downloads: DownloadTotals,
    churn: ChurnStats,
    samples: Vec<Sample>,
    gantry_exit: Option<String>,
}

fn run_traffic(
    ctx: &Running,
    args: &SoakArgs,
    inst: &mut ProxyInstance,
    samples_path: &Path,
) -> Result<Traffic> {
    let mut csv =
        fs::File::create(samples_path).with_context(|| format!("creating {}", samples_path.display()))?;
    writeln!(csv, "{CSV_HEADER}")?;
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let deadline = t0 + args.duration;
    let every = args.churn_every;
    let traffic = thread::scope(|s| {
        let stop = &stop;
        let oha: Vec<_> = OHA_LOADS
            .iter()
            .map(|load| s.spawn(move || oha_rounds(ctx, load, deadline, stop)))
            .collect();
        let ws = s.spawn(move || ws_rounds(ctx, deadline, stop));
        let downloads = s.spawn(move || {
            clients::slow_downloads(ctx.http, MAIN_HOST, DOWNLOAD_PATH, SLOW_CONNS, deadline, stop)
        });
        let churn = s.spawn(move || {
            let cycle = [Churn::Routes { every }, Churn::Endpoints { every }];
            churn::drive_cycle(&cycle, every, inst, stop, deadline)
        });
        let (samples, gantry_exit) = sample_loop(ctx, t0, deadline, args.sample_every, stop, &mut csv);
        let panicked = |what: &str| format!("{what} thread panicked");
        Traffic {
            t0,
            http: oha
                .into_iter()
                .zip(&OHA_LOADS)
                .map(|(h, load)| {
                    h.join().unwrap_or_else(|_| {
                        let mut t = HttpTotals::new(load.name, load.describe());
                        t.add_failed_round(&panicked(load.name));
                        t
                    })
                })
                .collect(),
            ws: ws.join().unwrap_or_else(|_| {
                let mut t = WsTotals::default();
                t.add_failed_round(&panicked("ws"));
                t
            }),
            downloads: downloads.join().unwrap_or_else(|_| DownloadTotals {
                errors: 1,
                error_kinds: [(panicked("slow download"), 1)].into(),
                ..DownloadTotals::default()
            }),
            churn: churn.join().unwrap_or_else(|_| ChurnStats {
                failed: 1,
                last_error: Some(panicked("churn")),
                ..ChurnStats::default()
            }),
            samples,
            gantry_exit,
        }
    });
    Ok(traffic)
}

/// Samples every `every` until `deadline`, appending to `csv`; stops everything (`stop`) when Gantry
/// is gone.
fn sample_loop(
    ctx: &Running,
    t0: Instant,
    deadline: Instant,
    every: Duration,
    stop: &AtomicBool,
    csv: &mut fs::File,
) -> (Vec<Sample>, Option<String>) {
    let mut samples = Vec::new();
    let mut next = t0;
    let mut next_progress = t0 + PROGRESS_EVERY;
    loop {
        while Instant::now() < next.min(deadline) && !procs::interrupted() {
            thread::sleep((next.min(deadline) - Instant::now()).min(Duration::from_millis(50)));
        }
        if Instant::now() >= deadline || procs::interrupted() {
            return (samples, None);
        }
        let s = sample(ctx, t0);
        let _ = writeln!(csv, "{}", csv_line(&s)).and_then(|()| csv.flush());
        samples.push(s);
        if !alive(ctx.pid) {
            stop.store(true, Ordering::Relaxed);
            return (
                samples,
                Some(format!("gantry (pid {}) was gone at t = {:.0} s", ctx.pid, s.t_s)),
            );
        }
        if Instant::now() >= next_progress {
            eprintln!(
                "   t {:>5.0} s  RSS {:.1} MiB  fds {}  threads {}  open conns {}",
                s.t_s,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.threads,
                s.active_conns.map(|n| n.to_string()).unwrap_or("?".into())
            );
            next_progress += PROGRESS_EVERY;
        }
        next += every;
    }
}

/// Calls `round` with the round's length until less than [`MIN_ROUND`] is left before `deadline`
/// (or `stop`). A round that returns at once is followed by a 1 s pause, not a tight loop.
fn in_rounds(deadline: Instant, longest: Duration, stop: &AtomicBool, mut round: impl FnMut(Duration)) {
    while !stop.load(Ordering::Relaxed) && !procs::interrupted() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_ROUND {
            break;
        }
        let t = Instant::now();
        round(left.min(longest));
        if t.elapsed() < Duration::from_secs(1) {
            thread::sleep(Duration::from_secs(1));
        }
    }
}

fn oha_rounds(ctx: &Running, load: &OhaLoad, deadline: Instant, stop: &AtomicBool) -> HttpTotals {
    let url = if load.tls {
        format!("https://{MAIN_HOST}:{}/", ctx.https.port())
    } else {
        format!("http://{MAIN_HOST}:{}/", ctx.http.port())
    };
    let mut totals = HttpTotals::new(load.name, load.describe());
    let mut n = 0;
    in_rounds(deadline, OHA_ROUND, stop, |d| {
        n += 1;
        let mut cmd = pinned(&ctx.load_cpus, &ctx.oha);
        cmd.args(oha_args_with(load.conns, d, &url, load.mode, Some(load.rate)));
        match run_bounded_until(load.name, cmd, d + Duration::from_secs(60), stop) {
            Ok(out) => {
                let _ = fs::write(
                    ctx.raw.join(format!("{}-{n}.txt", load.name)),
                    format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr),
                );
                if !out.status.success() {
                    totals.add_failed_round(&format!("oha {}: {}", out.status, last_lines(&out.stderr, 2)));
                    return;
                }
                match parse_oha(&out.stdout).and_then(|m| Ok((m, parse_oha_statuses(&out.stdout)?))) {
                    Ok((m, statuses)) => totals.add_round(&m, &statuses),
                    Err(e) => totals.add_failed_round(&format!("{e:#}")),
                }
            }
            // Stopped because Gantry is gone: that is the failure, not this round.
            Err(_) if stop.load(Ordering::Relaxed) => {}
            Err(e) => totals.add_failed_round(&format!("{e:#}")),
        }
    });
    totals
}

fn ws_rounds(ctx: &Running, deadline: Instant, stop: &AtomicBool) -> WsTotals {
    let mut totals = WsTotals {
        description: format!(
            "ws-load, {WS_CONNS} connections per round of up to {} s, each sending a 32-byte message \
             {WS_PAUSE_MS} ms after the previous echo; Host {WS_HOST}, path {WS_PATH}",
            WS_ROUND.as_secs()
        ),
        ..WsTotals::default()
    };
    let mut n = 0;
    in_rounds(deadline, WS_ROUND, stop, |d| {
        n += 1;
        let cmd = crate::ws::load_command(
            &ctx.load_cpus,
            &ctx.self_exe,
            &WsLoadArgs {
                addr: ctx.http,
                host: WS_HOST.into(),
                path: WS_PATH.into(),
                conns: WS_CONNS,
                duration: d,
                size: 32,
                pause_ms: WS_PAUSE_MS,
            },
        );
        match run_bounded_until("ws-load", cmd, d + Duration::from_secs(90), stop) {
            Ok(out) => {
                let _ = fs::write(
                    ctx.raw.join(format!("ws-load-{n}.txt")),
                    format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr),
                );
                if !out.status.success() {
                    totals.add_failed_round(&format!(
                        "ws-load {}: {}",
                        out.status,
                        last_lines(&out.stderr, 2)
                    ));
                    return;
                }
                match serde_json::from_str::<WsLoadResult>(out.stdout.trim()) {
                    Ok(r) => totals.add_round(&r, d.as_secs_f64()),
                    Err(e) => totals.add_failed_round(&format!("parsing ws-load output: {e}")),
                }
            }
            Err(_) if stop.load(Ordering::Relaxed) => {}
            Err(e) => totals.add_failed_round(&format!("{e:#}")),
        }
    });
    totals
}

fn write_outputs(out: &Path, report: &SoakReport, samples: &[Sample]) -> Result<()> {
    fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    fs::write(out.join("report.md"), markdown(report))?;
    let series = |label: &str, f: fn(&Sample) -> Option<f64>| svg::Panel {
        label: label.into(),
        points: samples.iter().filter_map(|s| Some((s.t_s, f(s)?))).collect(),
    };
    let mut panels = vec![
        series("RSS (MiB)", |s| Some(s.rss_kib as f64 / 1024.0)),
        series("open file descriptors", |s| Some(s.fds as f64)),
        series("threads", |s| Some(s.threads as f64)),
        series("open client connections (gantry_active_connections)", |s| {
            s.active_conns.map(|n| n as f64)
        }),
    ];
    panels.retain(|p| !p.points.is_empty());
    let warmup = report.memory.as_ref().map(|m| m.warmup.t_s);
    fs::write(
        out.join("soak.svg"),
        svg::time_series(
            "Gantry soak test",
            &format!(
                "{}; dashed line: the first sample after the warm-up",
                if report.verdict.pass {
                    "PASS".to_string()
                } else {
                    format!("FAIL ({} reason(s), see report.md)", report.verdict.reasons.len())
                }
            ),
            &panels,
            warmup.map(|t| (t, "first sample after the warm-up")),
        ),
    )?;
    Ok(())
}
